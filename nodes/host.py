"""The one adapter between the nodes and the ComfyUI host: folders, device, progress, interrupt, events.

Nothing here touches ComfyUI at import. `host()` returns `ComfyHost` when ComfyUI's modules import
(the pack runs inside ComfyUI) and `StandaloneHost` otherwise, so every node also runs in plain
Python (tests, scripts): model files are then listed under $KNOTFORCING_MODELS_DIR/<folder>/, user
files under $KNOTFORCING_INPUT_DIR (default ./input), output goes to $KNOTFORCING_OUTPUT_DIR (default
./output). Either way a node reads only names the host lists or `folders.py` checks (never a path).
Tests swap the host with `use_host()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .folders import input_path, list_files, next_free_file, safe_name

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
KNOT_FOLDER = "knot_forcing"  # our own model folder, registered next to ComfyUI's


class RenderInterrupted(Exception):
    """Raised by StandaloneHost.raise_if_interrupted (inside ComfyUI the host's own exception is used)."""


class StandaloneHost:
    """No ComfyUI: folders under $KNOTFORCING_MODELS_DIR, a thread-safe interrupt flag, events to the log."""

    name = "standalone"

    def __init__(self) -> None:
        self._interrupt = threading.Event()

    # folders -----------------------------------------------------------------------------------------
    def _roots(self, folder: str) -> list[Path]:
        base = os.environ.get("KNOTFORCING_MODELS_DIR")
        return [Path(base) / folder] if base else []

    def list_models(self, folder: str) -> list[str]:
        names: set[str] = set()
        for root in self._roots(folder):
            if root.is_dir():
                names |= {p.relative_to(root).as_posix() for p in root.rglob("*")
                          if p.is_file() and p.suffix in MODEL_EXTENSIONS}
        return sorted(names)

    def model_path(self, folder: str, name: str) -> Path | None:
        """Only a name the host lists for the folder; the folder's owner may have linked files into it."""
        if not safe_name(name) or name not in self.list_models(folder):
            return None
        return next((root / name for root in self._roots(folder) if (root / name).is_file()), None)

    def input_dir(self) -> Path:
        """The folder user files are read from: $KNOTFORCING_INPUT_DIR, default ./input."""
        return Path(os.environ.get("KNOTFORCING_INPUT_DIR", "input"))

    def list_inputs(self, extensions: tuple[str, ...]) -> list[str]:
        """The files of the input folder with these extensions, as a node's list offers them."""
        return list_files(self.input_dir(), extensions)

    def input_file(self, name: str, extensions: tuple[str, ...], what: str) -> Path:
        """The input-folder file `name`, resolved and checked to stay inside; anything else raises one refusal."""
        return input_path(self.input_dir(), name, extensions, what)

    def register_model_folder(self) -> None:
        """Standalone: folders come from $KNOTFORCING_MODELS_DIR; nothing to register."""

    def output_file(self, prefix: str, extension: str) -> tuple[Path, str]:
        """A new, unused file name under the output folder: (path, subfolder relative to it)."""
        out = Path(os.environ.get("KNOTFORCING_OUTPUT_DIR", "output"))
        return next_free_file(out, prefix, extension)

    # devices ------------------------------------------------------------------------------------------
    def torch_device(self) -> torch.device:
        return torch.device("cpu")

    def free_memory(self) -> None:
        """Nothing cached on the CPU."""

    # progress, interrupt, events ------------------------------------------------------------------
    def progress(self, total: int, node_id: str | None) -> Progress:
        return Progress(total, node_id, None)

    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def interrupt(self) -> None:
        self._interrupt.set()

    def raise_if_interrupted(self) -> None:
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise RenderInterrupted("render interrupted")

    @property
    def interrupt_errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions that mean 'the user cancelled' (ComfyUI's progress hook raises its own)."""
        return (RenderInterrupted,)

    def send(self, event: str, data: dict) -> None:
        log.debug("event %s: %s", event, {k: v for k, v in data.items() if k != "frames"})

    def video_output(self, path: Path) -> Any:
        """A VIDEO for the core video nodes; without ComfyUI, the path itself."""
        return str(path)


class ComfyHost(StandaloneHost):
    """Inside ComfyUI: folder_paths, comfy.model_management, comfy.utils.ProgressBar, PromptServer."""

    name = "comfyui"

    def __init__(self, folder_paths: Any) -> None:
        super().__init__()
        self.fp = folder_paths

    def list_models(self, folder: str) -> list[str]:
        if folder not in self.fp.folder_names_and_paths:
            return []
        return list(self.fp.get_filename_list(folder))

    def model_path(self, folder: str, name: str) -> Path | None:
        """Only a name ComfyUI itself lists for the folder (its folders may hold links the owner placed there)."""
        if not safe_name(name) or name not in self.list_models(folder):
            return None
        found = self.fp.get_full_path(folder, name)
        return Path(found) if found else None

    def input_dir(self) -> Path:
        return Path(self.fp.get_input_directory())

    def register_model_folder(self) -> None:
        """Add models/knot_forcing without dropping paths already set for it (extra_model_paths.yaml)."""
        default = os.path.join(self.fp.models_dir, KNOT_FOLDER)
        self.fp.add_model_folder_path(KNOT_FOLDER, default)  # appends; keeps the yaml's paths first
        paths, extensions = self.fp.folder_names_and_paths[KNOT_FOLDER]
        self.fp.folder_names_and_paths[KNOT_FOLDER] = (paths, set(extensions) | set(MODEL_EXTENSIONS))

    def output_file(self, prefix: str, extension: str) -> tuple[Path, str]:
        return next_free_file(Path(self.fp.get_output_directory()), prefix, extension)

    def torch_device(self) -> torch.device:
        import comfy.model_management as mm

        return mm.get_torch_device()

    def free_memory(self) -> None:
        import comfy.model_management as mm

        mm.soft_empty_cache()

    def progress(self, total: int, node_id: str | None) -> Progress:
        import comfy.utils

        return Progress(total, node_id, comfy.utils.ProgressBar(total, node_id=node_id))

    def interrupted(self) -> bool:
        import comfy.model_management as mm

        return bool(mm.processing_interrupted())

    def interrupt(self) -> None:
        import comfy.model_management as mm

        mm.interrupt_current_processing(True)

    def raise_if_interrupted(self) -> None:
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()

    @property
    def interrupt_errors(self) -> tuple[type[BaseException], ...]:
        import comfy.model_management as mm

        return (RenderInterrupted, mm.InterruptProcessingException)

    def send(self, event: str, data: dict) -> None:
        from server import PromptServer

        send_to_client(getattr(PromptServer, "instance", None), event, data)

    def video_output(self, path: Path) -> Any:
        try:
            from comfy_api.input_impl import VideoFromFile
        except ImportError:  # an older ComfyUI without VIDEO types
            return str(path)
        return VideoFromFile(str(path))


def send_to_client(server: Any, event: str, data: dict) -> None:
    """An event to the client that queued the running prompt only, as core sends its own progress.

    ComfyUI keeps that client's id on the server while the prompt runs (`server.client_id`, from the
    /prompt request); a prompt queued without one has no client to show anything to, so nothing is sent.
    Never broadcast: other users of the server must not see this render or its file name.
    """
    client = getattr(server, "client_id", None)
    if server is not None and client is not None:
        server.send_sync(event, data, client)


class Progress:
    """Per-chunk progress. The chunk's last frame [H, W, 3] uint8 comes along (test hosts keep it), but the
    host's bar gets no image: the pack's own widget plays the chunks, and a host preview image would show
    a second, upscaled preview and then stay in front of the finished video (the frontend draws a node's
    preview images before its outputs)."""

    def __init__(self, total: int, node_id: str | None, bar: Any) -> None:
        self.total, self.node_id, self.bar = total, node_id, bar
        self.updates: list[int] = []

    def update(self, done: int, preview: np.ndarray | None = None) -> None:
        self.updates.append(done)
        if self.bar is not None:
            self.bar.update_absolute(done, self.total)


_lock = threading.Lock()
_current: StandaloneHost | None = None


def _detect() -> StandaloneHost:
    try:
        import folder_paths  # ComfyUI's module, importable only inside the host
    except ImportError:
        return StandaloneHost()
    if not hasattr(folder_paths, "folder_names_and_paths"):
        return StandaloneHost()
    return ComfyHost(folder_paths)


def host() -> StandaloneHost:
    """The current host, detected on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = _detect()
        return _current


@contextlib.contextmanager
def use_host(replacement: StandaloneHost) -> Iterator[StandaloneHost]:
    """Run with another host (tests: a recording host); restores the previous one after."""
    global _current
    with _lock:
        previous, _current = _current, replacement
    try:
        yield replacement
    finally:
        with _lock:
            _current = previous
