"""Optional torch.compile of the DiT blocks, checked before any work starts.

`KnotDiT.compile_blocks` does the compiling; this module names the modes users can pick
(CLI `--compile`, job key `compile`, the loader node's `compile` widget) and turns what
inductor would otherwise fail on deep inside the first forward (no C++ compiler on the
CPU, no Triton on a GPU) into one message with the fix.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from typing import TYPE_CHECKING

import torch

from .errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from .dit import KnotDiT

log = logging.getLogger(__name__)

# reduce-overhead (CUDA graphs) is left out until it has run on a GPU: `bench/stream_speed.py --compile
# reduce-overhead` tries it.
COMPILE_MODES = ("none", "default", "max-autotune")


def find_cxx() -> str | None:
    """The C++ compiler inductor would use on the CPU ($CXX, else g++, clang++, c++), or None."""
    for name in (os.environ.get("CXX", ""), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def check_compile(mode: str, device: torch.device | str) -> None:
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile={mode!r}; allowed: {', '.join(COMPILE_MODES)}")
    if mode == "none":
        return
    kind = torch.device(device).type
    if kind == "cpu":
        if find_cxx() is None:
            raise MissingDependencyError("compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; install "
                                         "one (e.g. `apt install g++`) or use compile='none'")
    elif kind == "cuda" and importlib.util.find_spec("triton") is None:
        raise MissingDependencyError("compile on a GPU needs Triton: `pip install triton` (Linux; it ships with the "
                                     "CUDA builds of torch) or `pip install triton-windows`; or use compile='none'")


def compile_model(model: KnotDiT, mode: str) -> None:
    """Compile the model's blocks in place (the first chunks of a render pay the compile time)."""
    check_compile(mode, model.patch_embedding.weight.device)
    if mode != "none":
        log.info("compiling the DiT blocks (mode %s): the first chunks include the compile time", mode)
        model.compile_blocks(mode=mode)
