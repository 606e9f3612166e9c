"""Before a render starts: how many video frames it makes, and whether its parts fit together.

A render is asked for in seconds, in video frames, or "until the driving signal ends". The stream
asks its signals for more latent frames than it commits: the knot strategy denoises c + k frames
per chunk (the k knot frames belong to the next chunk), and rolling / avatar forcing hold len(steps)
chunks in flight (AvatarForcing's first chunk also outputs the reference as latent 0).
`latent_frames_asked` counts exactly what `stream.generate` requests, so a signal that is too short
is reported here, before any sampling, instead of failing mid-video.
Counts follow the Wan2.1 VAE (latent 0 -> 1 video frame, every later latent -> 4).

`plan_length` is the one length rule of every front end (node, CLI, API, batch, demo): a `Length` in
seconds, frames, or "signal" (until the driving inputs end). A signal with end_policy 'stop' bounds the
render to the frames its latents can serve; one with 'continue', and the muxed audio, end the video where
they end when the length is "signal" (the last chunk's knot may look past that end: silence / the last
pose held), and never refuse a longer explicit length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .config import LATENT_CHANNELS, StreamConfig, latent_frames_for, video_frames_for
from .driving import encode_driving
from .errors import ConfigError, InputError

LengthUnit = Literal["seconds", "frames", "signal"]
LENGTH_UNITS: tuple[str, ...] = ("seconds", "frames", "signal")


class LengthError(ConfigError, InputError):
    """No length can be planned: neither a length setting nor a driving input with an end."""


@dataclass(frozen=True)
class Length:
    """How long a render is asked to be: `amount` in `unit` ("signal": until the driving inputs end)."""

    amount: float = 0.0
    unit: LengthUnit = "signal"

    @classmethod
    def of(cls, *, frames: int | None = None, seconds: float | None = None) -> Length:
        """The CLI/job form: frames, else seconds, else until the driving inputs end."""
        if frames is not None:
            return cls(frames, "frames")
        return cls(seconds, "seconds") if seconds is not None else cls()


def chunks_for(cfg: StreamConfig, video_frames: int) -> int:
    """Chunks the stream must produce to decode at least `video_frames` frames."""
    return max(1, -(-(latent_frames_for(video_frames) - cfg.lead_frames) // cfg.chunk_len))


def latent_frames_asked(cfg: StreamConfig, chunks: int) -> int:
    """Latent frames 0 .. n-1 that `generate` asks its driving signals for while making `chunks` chunks."""
    if chunks < 1:
        return 0
    c = cfg.chunk_len
    if cfg.rolls:
        return cfg.lead_frames + (chunks - 1 + len(cfg.steps)) * c  # the newest in-flight chunk reaches this far
    return chunks * c + cfg.knot_len  # the last chunk also denoises its k knot frames


def frames_until_signal_end(cfg: StreamConfig, available_latents: int, fps: float) -> int:
    """Most video frames a render can make when its signals serve `available_latents` latent frames."""
    c = cfg.chunk_len
    if cfg.rolls:
        chunks = (available_latents - cfg.lead_frames) // c - len(cfg.steps) + 1
    else:
        chunks = (available_latents - cfg.knot_len) // c
    if chunks < 1:
        need = latent_frames_asked(cfg, 1)
        raise InputError(f"the driving signal covers {available_latents} latent frames "
                         f"(~{video_frames_for(available_latents) / fps:.2f} s at {fps:g} fps), but even one chunk "
                         f"needs {need} ({cfg.strategy}, chunk_len={c}, knot_len={cfg.knot_len}); give a longer "
                         "signal, or set the signal's end_policy to 'continue'")
    return video_frames_for(cfg.lead_frames + chunks * c)


def plan_length(cfg: StreamConfig, fps: float, length: Length, signals: Sequence = (),
                audio_frames: int | None = None) -> int:
    """Video frames to render (the module docstring's rule); raises before any work if it cannot be met.

    signals: the stream's driving signals (`num_frames`, `end_policy`, `available_latent_frames()`);
    audio_frames: video frames the muxed audio lasts (None: no audio).
    """
    bounded = [n for n in (s.available_latent_frames() for s in signals) if n is not None]
    available = min(bounded) if bounded else None
    ends = [s.num_frames for s in signals if s.num_frames is not None and s.end_policy == "continue"]
    ends += [audio_frames] if audio_frames is not None else []
    if length.unit == "signal" and available is None and ends:
        _check_fps(fps)
        return max(1, min(ends))
    frames = plan_frames(cfg, fps, length.amount, length.unit, available)
    return min([frames, *ends]) if length.unit == "signal" and ends else frames


def _check_fps(fps: float) -> None:
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps={fps!r}; the frame rate must be a positive number (e.g. 25)")


def plan_frames(cfg: StreamConfig, fps: float, length: float, unit: str, available_latents: int | None) -> int:
    """Video frames to render for `length` in `unit`; raises InputError if the signals end too early.

    available_latents: latent frames the driving signals serve (None = no bounded signal).
    """
    if unit not in LENGTH_UNITS:
        raise InputError(f"length unit {unit!r}; choose one of {', '.join(LENGTH_UNITS)}")
    _check_fps(fps)
    if unit == "signal":
        if available_latents is None:
            raise LengthError("no length given, and no driving signal with an end: give the length in seconds or "
                              "frames (--seconds / --frames, the sampler's length), or a driving input that ends "
                              "(--audio / --pose / --expression, or a signal with end_policy 'stop')")
        return frames_until_signal_end(cfg, available_latents, fps)
    if not isinstance(length, (int, float)) or not math.isfinite(length):
        raise InputError(f"length {length!r} {unit}; give a finite number")
    frames = round(length * fps) if unit == "seconds" else int(length)
    if frames < 1:
        raise InputError(f"length {length:g} {unit} gives {frames} video frames at {fps:g} fps; ask for at least "
                         "one frame")
    if available_latents is not None:
        asked = latent_frames_asked(cfg, chunks_for(cfg, frames))
        if asked > available_latents:
            most = frames_until_signal_end(cfg, available_latents, fps)
            raise InputError(f"the driving signal is shorter than the requested length: {frames} frames "
                             f"({frames / fps:.2f} s at {fps:g} fps) need {asked} latent frames of signal, it has "
                             f"{available_latents} (enough for {most} frames = {most / fps:.2f} s). Shorten the "
                             "length, choose 'signal' to stop where it ends, or set the signal's end_policy to "
                             "'continue'")
    return frames


def check_vae_pair(model_out_channels: int, vae_z_dim: int) -> None:
    """The DiT and the VAE must share the latent space (Wan2.1: 16 channels)."""
    if model_out_channels != vae_z_dim:
        raise InputError(f"the VAE has {vae_z_dim} latent channels but the model works in {model_out_channels} "
                         f"(the Wan2.1 VAE has {LATENT_CHANNELS}; the Wan2.2 VAE has 48); load wan_2.1_vae."
                         "safetensors for this model")


@torch.no_grad()
def preflight_signals(model, signals, device: torch.device | str) -> None:
    """Encode latent frame 0 of every driving signal through the model's adapters (features of the wrong
    kind or size fail here, before the output file exists); the signals cache what they compute."""
    encode_driving(model.driving, signals, 0, 1, device)
