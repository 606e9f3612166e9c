"""Fixtures for the node tests: tiny real model files, a models folder, and a recording host.

The nodes run exactly as in ComfyUI, without ComfyUI: the host is `StandaloneHost` (model files under
$KNOTFORCING_MODELS_DIR, output under $KNOTFORCING_OUTPUT_DIR) with its progress / event / interrupt
services recorded.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from knot_core.checkpoints import save_knot_model
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.model_file import SamplerDefaults
from knot_core.vae import VAEConfig, WanVAE
from nodes.host import Progress, StandaloneHost, use_host

TINY_STREAM = StreamConfig(steps=(1000, 500), ahead_init=4, ahead_step=3)
TINY_SAMPLER = SamplerDefaults(TINY_STREAM, fps=16, resolution=(32, 32))


class RecordingProgress(Progress):
    """Keeps the preview frame of every update (the last frame of each chunk, exact uint8)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.previews = []

    def update(self, done, preview=None):
        super().update(done, preview)
        self.previews.append(preview)


class RecordingHost(StandaloneHost):
    """StandaloneHost that records what the nodes report and can interrupt after N chunk events."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        super().__init__()
        self.events: list[tuple[str, dict]] = []
        self.progress_bars = []
        self.freed = 0
        self.interrupt_after = interrupt_after

    def progress(self, total, node_id):
        bar = RecordingProgress(total, node_id, None)
        self.progress_bars.append(bar)
        return bar

    def send(self, event, data):
        self.events.append((event, data))
        chunks = sum(1 for name, _ in self.events if name == "knotforcing.chunk")
        if self.interrupt_after is not None and chunks == self.interrupt_after:
            self.interrupt()

    def free_memory(self):
        self.freed += 1


@pytest.fixture
def models_dir(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("models")
    for folder in ("knot_forcing", "diffusion_models", "vae", "audio_encoders"):
        (root / folder).mkdir()
    torch.manual_seed(0)
    save_knot_model(KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval(), root / "knot_forcing" / "tiny.safetensors",
                    sampler=TINY_SAMPLER)
    save_knot_model(KnotDiT(PRESETS["tiny"]).eval(), root / "diffusion_models" / "tiny_t2v.safetensors",
                    sampler=SamplerDefaults(StreamConfig.for_strategy("self_forcing", steps=(1000, 500)), fps=16,
                                            resolution=(32, 32)))
    save_file(dict(WanVAE(VAEConfig.tiny()).state_dict()), str(root / "vae" / "tiny_vae.safetensors"))
    monkeypatch.setenv("KNOTFORCING_MODELS_DIR", str(root))
    monkeypatch.setenv("KNOTFORCING_OUTPUT_DIR", str(tmp_path_factory.mktemp("output")))
    return root


@pytest.fixture
def recording_host():
    with use_host(RecordingHost()) as h:
        yield h


def portrait(size: int = 96, seed: int = 0) -> torch.Tensor:
    """A ComfyUI IMAGE [1, size, size, 3] in 0..1: a skin-toned disc on a blue background."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, size, size, 3)
    img[..., 2] = 0.6
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size * 0.4) ** 2 + (xx - size * 0.5) ** 2) < (size * 0.2) ** 2
    img[0][disc] = torch.tensor([0.85, 0.62, 0.5])
    return (img + 0.02 * torch.rand(img.shape, generator=g)).clamp(0, 1)
