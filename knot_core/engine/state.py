"""Everything a stream carries from one chunk to the next, and its save/restore at chunk boundaries.

A saved state is one safetensors file: cache tensors, the pending knot, in-flight rolling
chunks and the noise generator state, plus JSON metadata with the cursors and the stream
settings, so a render resumed in a new process continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from ..config import StreamConfig
from ..errors import InputError
from .memory import Memory
from .noise import NoiseSource

STATE_FORMAT = "knot_forcing.stream_state.v1"


@dataclass
class StreamState:
    memory: Memory  # CachedMemory (or a test's reference memory)
    noise: NoiseSource
    ref_index: int
    next_frame: int = 0  # first latent frame of the next chunk
    chunk_index: int = 0
    anchored: bool = False  # reference K/V written
    knot: Tensor | None = None  # previous chunk's prediction of the knot frames (B, 16, k, h, w)
    rolling: list[Tensor] = field(default_factory=list)  # in-flight chunks, oldest first
    levels: list[int] = field(default_factory=list)  # their step index

    def save(self, path: str | Path, cfg: StreamConfig, *, extra_tensors: dict[str, Tensor] | None = None,
             extra_metadata: dict[str, str] | None = None) -> None:
        """Write the state atomically; callers may store their own tensors/metadata beside it
        (the render adds the VAE decoder's cache) under keys that do not clash."""
        tensors = {f"memory.{k}": v.contiguous() for k, v in self.memory.state_tensors().items()}
        tensors["noise.state"] = self.noise.get_state()
        if self.knot is not None:
            tensors["knot"] = self.knot.contiguous()
        tensors.update({f"rolling.{i}": x.contiguous() for i, x in enumerate(self.rolling)})
        meta = {"format": STATE_FORMAT, "stream_config": json.dumps(dataclasses.asdict(cfg)),
                "cursors": json.dumps({"ref_index": self.ref_index, "next_frame": self.next_frame,
                                       "chunk_index": self.chunk_index, "anchored": self.anchored,
                                       "levels": self.levels})}
        tensors.update(extra_tensors or {})
        meta.update(extra_metadata or {})
        tmp = Path(str(path) + ".tmp")
        try:
            save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
            tmp.replace(path)  # a crash mid-save never leaves a half-written state
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, path: str | Path, cfg: StreamConfig) -> None:
        """Restore into this freshly created state (same model, inputs and settings)."""
        try:
            from safetensors import safe_open
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
            raise InputError(f"cannot read stream state {path}: {err}") from err
        if meta.get("format") != STATE_FORMAT:
            raise InputError(f"{path} is not a Knot Forcing stream state (format {meta.get('format')!r})")
        saved = json.loads(meta["stream_config"])
        current = json.loads(json.dumps(dataclasses.asdict(cfg)))
        if saved != current:
            diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
            raise InputError(f"stream state {path} was saved with other settings (saved, now): {diff}; "
                             "resume with the settings of the interrupted render")
        cursors = json.loads(meta["cursors"])
        device = next(iter(self.memory.state_tensors().values())).device
        self.memory.load_state_tensors({k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("memory.")})
        self.noise.set_state(tensors["noise.state"])
        self.knot = tensors["knot"].to(device) if "knot" in tensors else None
        n_rolling = len(cursors["levels"])
        self.rolling = [tensors[f"rolling.{i}"].to(device) for i in range(n_rolling)]
        self.levels = list(cursors["levels"])
        self.ref_index, self.next_frame = cursors["ref_index"], cursors["next_frame"]
        self.chunk_index, self.anchored = cursors["chunk_index"], cursors["anchored"]
