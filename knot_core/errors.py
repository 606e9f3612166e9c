"""Error types raised at the library's boundaries.

Every user-facing error says what was got, what is required and how to fix it,
so the CLI and the ComfyUI nodes can show the message as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class KnotError(ValueError):
    """Base class for errors a user can act on (bad settings, bad files, bad inputs)."""


class ConfigError(KnotError):
    """A setting is out of its allowed range or inconsistent with another."""


class CheckpointError(KnotError):
    """A model file is missing, unreadable, or not the kind of file expected."""


class InputError(KnotError):
    """An input (image, audio, pose, latent) does not fit what the model needs."""


class MissingDependencyError(KnotError, ImportError):
    """An optional dependency is needed on this path; the message gives the install command."""


class OutputError(KnotError):
    """The output file could not be written (disk full, I/O error); the message says what the file holds."""


def run_script(main: Callable[[], object]) -> None:
    """Run a bench/ or train/ script's main: a KnotError (a bad file, setting or input) is one line naming the
    script, exit status 2, as argparse's own usage errors; never a traceback."""
    try:
        status = main()
    except KnotError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status if isinstance(status, int) else 0)
