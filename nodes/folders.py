"""Which files a node may read or write: only inside the host's own folders, checked by name and by resolved path.

The pack's security rule: a node reads a file only from ComfyUI's input folder or from a model folder.
A name is refused before any file-system access when it is empty, absolute, has a '..' or hidden ('.x')
part, a drive, a backslash, a NUL or another control character; otherwise `folder/name` is resolved (symlinks
followed) and must be a regular file that stays inside the resolved folder. Every refusal gives the
same message whether or not something exists at that name, so an answer tells nothing about the
server's files (no existence oracle), and no message quotes a file's content.

Output names (filename_prefix) follow the same spirit: relative, no '..', no hidden part, no control
character, a length every file system takes, and a folder that resolves inside the output folder.

The command line and the Python API read any path their user gives; only the nodes come through here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from knot_core.errors import CheckpointError, InputError

NAME_SHOWN = 80  # characters of a refused name quoted back; the rest is cut
PREFIX_MAX = 120  # characters of filename_prefix: sub-folders plus a name, far inside every file system's limits


def safe_name(name: object) -> bool:
    """True when `name` is a plain relative name: no way out of a folder is spelled in it."""
    if not isinstance(name, str) or not name.strip() or any(ord(c) < 32 or c == "\x7f" for c in name):
        return False
    if "\\" in name or PureWindowsPath(name).drive or name.startswith("~"):
        return False
    path = PurePosixPath(name)  # '.' parts are dropped here: './x.csv' is 'x.csv'
    return not path.is_absolute() and not any(part.startswith(".") for part in path.parts)  # '..', hidden files


def inside(folder: Path, name: object) -> Path | None:
    """folder/name resolved, when it is a regular file inside the resolved folder (symlinks included); else None."""
    if not safe_name(name):
        return None
    try:
        base = folder.resolve()
        target = (base / str(name)).resolve()
        if not target.is_relative_to(base):  # a symlink inside the folder that points out of it
            return None
        return target if target.is_file() else None
    except OSError:  # a name too long for the file system, a link loop: not a readable file either
        return None


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Names (posix, relative) of the files under `folder` a node may read; hidden files and links out are left out."""
    if not folder.is_dir():
        return []
    names = []
    for parent, dirs, files in os.walk(folder):  # followlinks=False: a linked folder is not walked
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            name = (Path(parent) / file).relative_to(folder).as_posix()
            if not file.startswith(".") and file.lower().endswith(extensions) and inside(folder, name):
                names.append(name)
    return sorted(names)


def refusal(what: str, name: object, place: str) -> InputError:
    """The one message for a name that is not a readable file in the folder, whatever the reason."""
    shown = str(name)[:NAME_SHOWN] + ("..." if len(str(name)) > NAME_SHOWN else "")
    return InputError(f"{what} {shown!r} is not a file in {place}; put the file there (or upload it), press R to "
                      "refresh, and pick it from the list (nodes never read files outside ComfyUI's folders)")


@contextmanager
def named_as_listed(path: Path, name: str, place: str) -> Iterator[None]:
    """Errors about a model file the node opened name it as the node's list does ('name' in models/folder), not
    by the server's absolute path; the loaders' own messages already never quote what the file holds."""
    try:
        yield
    except (InputError, CheckpointError) as err:
        shown, root = f"{name!r} in {place}", path.parents[len(PurePosixPath(name).parts) - 1]
        text = str(err).replace(str(path), shown).replace(str(path.resolve()), shown).replace(str(root), place)
        raise type(err)(text) from None


def input_path(folder: Path, name: object, extensions: tuple[str, ...], what: str) -> Path:
    """The file `name` in the input folder, checked; any other name raises the one refusal."""
    path = inside(folder, name)
    if path is None or not path.name.lower().endswith(extensions):
        raise refusal(what, name, f"ComfyUI's input folder ({', '.join(extensions)})")
    return path


def prefix_problem(prefix: str) -> str | None:
    """What is wrong with a filename_prefix (already stripped, '\\' read as '/'), or None."""
    parts = prefix.split("/")  # not PurePosixPath: it drops '.' parts, and '.' alone would be a hidden file
    if any(ord(c) < 32 or c == "\x7f" for c in prefix):
        return "holds a control character (NUL, newline, tab)"
    if prefix.startswith("/") or PureWindowsPath(prefix).drive or ".." in parts or prefix.startswith("~"):
        return "points outside the output folder"
    if any(part.startswith(".") for part in parts):
        return "would make a hidden file or folder (a part starts with '.')"
    if prefix.endswith("/"):
        return "ends with '/' and names no file"
    if len(prefix) > PREFIX_MAX:
        return f"is {len(prefix)} characters long; at most {PREFIX_MAX} are allowed"
    return None


def next_free_file(folder: Path, prefix: str, extension: str) -> tuple[Path, str]:
    """folder/<prefix>_00001.<ext> with the first unused counter; the prefix may hold sub-folders."""
    prefix = prefix.strip().replace("\\", "/") or "KnotForcing"
    problem = prefix_problem(prefix)
    if problem is not None:
        shown = prefix[:NAME_SHOWN] + ("..." if len(prefix) > NAME_SHOWN else "")
        raise InputError(f"filename_prefix {shown!r} {problem}; use a relative name such as 'KnotForcing' or "
                         "'portraits/take'")
    sub, _, stem = prefix.rpartition("/")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / sub
    if not target.resolve().is_relative_to(folder.resolve()):  # a link in the output folder that points out of it
        raise InputError(f"filename_prefix {prefix!r} points outside the output folder (through a link); use "
                         "another sub-folder")
    target.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"_(\d{5})\." + re.escape(extension) + "$")
    used = [int(m.group(1)) for p in target.iterdir() if (m := pattern.match(p.name))]
    return target / f"{stem}_{max(used, default=0) + 1:05d}.{extension}", sub
