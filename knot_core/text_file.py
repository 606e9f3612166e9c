"""Reading a user's text file (jobs, pose JSON, expression CSV): the text, or one line saying what is wrong.

A binary file, a file in another encoding or an unreadable one gets an InputError naming the file and the
kind of file expected, never a UnicodeDecodeError traceback; the content itself is never quoted.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def read_text(path: Path, what: str, *, encoding: str = "utf-8") -> str:
    """The file's text; `what` names the expected kind ("jobs file (.jsonl or .toml)") for the message."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{what} {str(path)!r} cannot be read ({err.strerror}); check the path and its "
                         "permissions") from err
    if b"\x00" in data[:65536]:
        raise InputError(f"{what} {str(path)!r} is a binary file, not text; give the {what} itself")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise InputError(f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}); save it as UTF-8 text") \
            from err
