"""What each forward attends to besides itself, per strategy: the anchor (and where it sits), the window.

Two kinds of forward read the cache: a denoising forward (one step of a chunk, or one joint
forward of a rolling window whose oldest frame is i) and the clean commit pass that writes
frames i.. into the cache. Each gets a `Visible`: which anchor frames it sees and at which
temporal index, and the oldest window frame it sees. Positions are absolute latent indices
here; the cache turns them into offsets from the forward's first frame, so what matters is
the distance, which every rule below keeps bounded however long the stream runs.

Per strategy (c = chunk_len, L = window_len, S = sink_len, i = the forward's first frame):
  knot              reference at n (running ahead); window = committed frames in [i - L, i).
  self_forcing      no anchor; window [i - L, i) (a sink, if set, as longlive's "relative").
  longlive          sink = frames 0..S-1; window [max(i - L, S), i). sink_positions "relative"
                    (LongLive "infinity"): the sink sits just before the window; "absolute"
                    (LongLive default): at its own indices 0..S-1.
  rolling_forcing   denoise: as longlive "relative". commit: with commit_window_len = W > 0, a
                    plain sliding window over every frame, sink included, at absolute indices:
                    frames [i - W, i) (Rolling Forcing's clean pass reads the last W frames of
                    its cache); W = 0: the denoise context.
  avatar_forcing    reference latent (video latent 0) as a 1-frame anchor, committed frames from
                    latent 1 on; window [max(i - L, 1), i). denoise: the reference sits just before
                    the window; commit: at its own index 0 (AvatarForcing's update pass ropes it at 0).

Absolute placements make the distance grow with i. The peers' RoPE tables hold 1024 positions,
so their loops stop there (`PEER_ROPE_FRAMES`); we are identical while their forwards fit in the
table and then hold the distance at the largest one it allowed, so positions never grow.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import StreamConfig

PEER_ROPE_FRAMES = 1024  # rope_params(1024, ...) in Self Forcing / LongLive / Rolling Forcing / AvatarForcing


@dataclass(frozen=True)
class Visible:
    """The cached frames one forward attends to."""

    anchor_position: int | None  # temporal index given to the first visible anchor frame; None: anchor unseen
    window_from: int  # oldest window frame seen (absolute latent index)
    anchor_from: int = 0  # first anchor frame seen (a plain sliding window can cut into the sink)


def _absolute(cfg: StreamConfig, i: int, index: int) -> int:
    """Where a frame at absolute `index` sits for a forward at i: at index while the peers' RoPE table
    covers the forward, then at the largest distance it allowed."""
    reach = PEER_ROPE_FRAMES - cfg.max_forward_frames
    return max(index, i - reach)


def denoise_visible(cfg: StreamConfig, i: int, ref_index: int) -> Visible:
    """Context of a denoising forward whose first frame is i (ref_index: the knot reference's n)."""
    if cfg.strategy == "knot" and cfg.anchor:
        return Visible(ref_index, i - cfg.window_len)
    lo = max(i - cfg.window_len, cfg.lead_frames + cfg.sink_len)
    if cfg.strategy == "avatar_forcing":
        return Visible(lo - 1, lo)  # the reference right before the oldest visible frame
    if not cfg.sink_len:
        return Visible(None, lo)
    if cfg.sink_positions == "absolute":
        return Visible(_absolute(cfg, i, 0), lo)
    return Visible(lo - cfg.sink_len, lo)  # the sink right before the window


def commit_visible(cfg: StreamConfig, i: int, ref_index: int) -> Visible:
    """Context of the clean pass that writes frames i.. into the cache."""
    if cfg.strategy == "avatar_forcing":
        return Visible(_absolute(cfg, i, 0), denoise_visible(cfg, i, ref_index).window_from)
    if cfg.strategy == "rolling_forcing" and cfg.commit_window_len:
        lo = i - cfg.commit_window_len
        if lo >= cfg.sink_len:
            return Visible(None, lo)
        first = max(lo, 0)
        return Visible(first, cfg.sink_len, anchor_from=first)
    return denoise_visible(cfg, i, ref_index)
