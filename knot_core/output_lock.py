"""Claiming an output file while it is written: `OUT.mp4.lock` beside it, one writer at a time.

Two renders to the same name would interleave fragments into one corrupt file, and `--overwrite` would
replace a file another process is still appending to. So a writer first creates the lock file with
O_CREAT|O_EXCL (atomic on local file systems) holding who it is (pid, host, start time, command); a second
writer is refused with a message naming the first. The lock is removed when the claim ends (normal end,
error, Ctrl-C, SIGTERM through the CLI's handler) and at interpreter exit. A process killed with SIGKILL
cannot remove it: a lock whose pid is no longer alive on this host is stale and taken over. A lock from
another host cannot be checked, so it is reported with the command to remove it by hand.

Claims are reentrant within one process (render() claims the job, and its VideoWriter claims the same
file again): a per-process count, so the lock goes when the outermost claim ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
_HELD: dict[Path, int] = {}  # lock path -> nesting count, this process
_GUARD = threading.Lock()


def lock_path(out: str | Path) -> Path:
    """OUT.mp4 -> OUT.mp4.lock."""
    out = Path(out).expanduser()
    return out.with_name(out.name + LOCK_SUFFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True  # cannot tell (e.g. Windows quirks): treat as alive, never steal a live lock
    return True


def _read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _describe(owner: dict | None) -> str:
    if owner is None:
        return "an unknown writer (the lock file is unreadable)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"process {owner.get('pid')} on {owner.get('host')} since {started} ({owner.get('command', '?')})"


def _is_stale(owner: dict | None) -> bool:
    """Only a lock from this host whose process is gone is stale; anything unreadable is not ours to take."""
    if owner is None or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid)


def _create(path: Path) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
             "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300] or "python"}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, json.dumps(owner).encode("utf-8"))
    finally:
        os.close(fd)


def acquire(out: str | Path) -> Path:
    """Claim `out` for this process (reentrant) or raise InputError naming the process that holds it."""
    path = lock_path(out).absolute()
    with _GUARD:
        if path in _HELD:
            _HELD[path] += 1
            return path
        for _ in range(3):  # a stale lock removed under us by another claimant: try again
            try:
                _create(path)
                break
            except FileExistsError:
                owner = _read_owner(path)
                if not _is_stale(owner):
                    raise InputError(
                        f"output {str(out)!r} is being written by {_describe(owner)}; wait for it to finish or "
                        f"write to another name. If no such render is running, delete {str(path)!r}") from None
                log.warning("removing the stale lock %s of %s (no longer running)", path, _describe(owner))
                path.unlink(missing_ok=True)
            except FileNotFoundError as err:
                raise InputError(f"output directory {str(path.parent)!r} does not exist; create it first "
                                 "(mkdir -p)") from err
            except OSError as err:
                raise InputError(f"cannot claim output {str(out)!r}: {str(path)!r} cannot be created "
                                 f"({err.strerror}); choose a writable directory") from err
        else:
            raise InputError(f"cannot claim output {str(out)!r}: its lock {str(path)!r} keeps reappearing")
        _HELD[path] = 1
        return path


def release(path: Path) -> None:
    """End one claim made by `acquire`; the outermost one removes the lock file."""
    with _GUARD:
        count = _HELD.get(path, 0)
        if count > 1:
            _HELD[path] = count - 1
            return
        _HELD.pop(path, None)
        if count == 1:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_output(out: str | Path) -> Iterator[Path]:
    """`with claim_output(out):` — out is ours for the block (see the module docstring)."""
    path = acquire(out)
    try:
        yield path
    finally:
        release(path)


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        path.unlink(missing_ok=True)
    _HELD.clear()
