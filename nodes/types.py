"""Socket type names and the small typed objects the pack's sockets carry.

Custom socket types stop miswiring (a KNOT_MODEL cannot go into ComfyUI's MODEL input).
Every object is immutable and holds no stream state, so a cached node output can feed any
number of renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from knot_core.config import VAE_STRIDE, StreamConfig

if TYPE_CHECKING:
    from torch import Tensor

    from knot_core.dit import KnotDiT
    from knot_core.model_file import ModelInfo

KNOT_MODEL = "KNOT_MODEL"
KNOT_VAE = "KNOT_VAE"
KNOT_REFERENCE = "KNOT_REFERENCE"
KNOT_SETTINGS = "KNOT_SETTINGS"
KNOT_SIGNAL = "KNOT_SIGNAL"
KNOT_AUDIO_ENCODER = "KNOT_AUDIO_ENCODER"
CATEGORY = "KnotForcing"


@dataclass(frozen=True)
class LoadedModel:
    """A loaded DiT and what its file said about it (format, config, recommended sampler settings)."""

    model: KnotDiT
    info: ModelInfo
    threads: int | None = None  # CPU intra-op threads to render with (None: the host's setting)
    takes_text: bool = True  # False: trained without a prompt (the demo), so running without text is no warning


@dataclass(frozen=True)
class Reference:
    """The encoded reference photo at the video size (latent None: no photo, the size only)."""

    latent: Tensor | None  # (1, 16, 1, h, w) normalised latent
    height: int  # video size in pixels
    width: int
    keep_mask: Tensor | None = None  # (h, w) in 0..1, 1 = keep the reference there

    @property
    def latent_size(self) -> tuple[int, int]:
        if self.latent is None:
            return self.height // VAE_STRIDE[1], self.width // VAE_STRIDE[2]
        return int(self.latent.shape[-2]), int(self.latent.shape[-1])


@dataclass(frozen=True)
class KnotSettings:
    """What the settings nodes chose: overrides (StreamConfig field names) laid over the loaded model's
    recommended StreamConfig, so every recommendation not overridden stays (as the CLI's flags and
    RenderJob.settings do)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, recommended: StreamConfig) -> StreamConfig:
        """The StreamConfig a render uses (raises ConfigError on an invalid combination)."""
        return recommended.with_settings(self.overrides)

    def add(self, **overrides: Any) -> KnotSettings:
        return KnotSettings({**self.overrides, **overrides})


@dataclass(frozen=True)
class Signals:
    """The driving signals of a render (at most one per kind) and the audio to mux into the file."""

    items: tuple[Any, ...] = ()  # knot_core DrivingSignal objects
    audio: tuple[Tensor, int] | None = None  # (waveform [C, N], sample rate) as given, for the MP4

    def add(self, signal: Any, audio: tuple[Tensor, int] | None = None) -> Signals:
        """A copy with one more signal (SignalSet refuses two of a kind and mixed frame rates)."""
        from knot_core.signals import SignalSet

        SignalSet(self.items + (signal,))
        return replace(self, items=self.items + (signal,), audio=audio if audio is not None else self.audio)

    @property
    def fps(self) -> float | None:
        return self.items[0].fps if self.items else None

    def available_latent_frames(self) -> int | None:
        from knot_core.signals import SignalSet

        return SignalSet(self.items).available_latent_frames()
