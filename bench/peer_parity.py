"""Max |ours - reference| per peer loop: our cached stream against the cache-free restatements of the
authors' loops (tests/reference_rolling.py, tests/reference_memory.py, tests/reference_peers.py), fp32, tiny
models, per chunk.

    python bench/peer_parity.py              # 12 chunks per loop (~15 s on a 2-core CPU)
    python bench/peer_parity.py --chunks 20

Prints, per loop and per wrong variant, the largest difference over all chunks and the chunk it is
reached at; the test suite asserts <= 1e-5 for the loops and > 1e-4 for the variants (test_peer_loops.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from knot_core.config import PRESETS, StreamConfig  # noqa: E402
from knot_core.dit import KnotDiT  # noqa: E402
from knot_core.engine.noise import NoiseSource  # noqa: E402
from knot_core.engine.stream import StreamInputs, generate, start_stream  # noqa: E402
from knot_core.errors import run_script  # noqa: E402
from tests.reference_memory import ReferenceMemory  # noqa: E402
from tests.reference_rolling import AVATAR_FORCING, ROLLING_FORCING, RollingReference  # noqa: E402
from tests.test_peer_loops import (  # noqa: E402
    SEED,
    SIZE,
    AvatarTable,
    NoAudioOnReference,
    RefRopedBeforeWindowOnCommit,
    _avatar_case,
    _engine,
    _sharpen,
)


def _report(name: str, ours, theirs) -> None:
    diffs = [float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True)]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    print(f"{name:<58} max {diffs[worst]:.1e} (chunk {worst} of {len(diffs)})")


def avatar_forcing(chunks: int) -> None:
    model, ref, text = _avatar_case()
    cfg = StreamConfig.for_strategy("avatar_forcing")
    ours = _engine(model, cfg, StreamInputs(SIZE, reference=ref, text=text, signals=[AvatarTable()]), chunks)
    for name, cls, peer in (
            ("avatar_forcing == AvatarForcing loop", RollingReference, AVATAR_FORCING),
            ("  variant: window 3", RollingReference, dataclasses.replace(AVATAR_FORCING, denoise_window=3)),
            ("  variant: reference placed as in denoise on commit", RefRopedBeforeWindowOnCommit, AVATAR_FORCING),
            ("  variant: no audio on the reference pass", NoAudioOnReference, AVATAR_FORCING)):
        loop = cls(model, peer, model.encode_text(text), NoiseSource(SEED), reference=ref, signals=[AvatarTable()],
                   latent_size=SIZE)
        _report(name, ours, loop.run(chunks))


def rolling_forcing(chunks: int) -> None:
    torch.manual_seed(0)
    model = _sharpen(KnotDiT(PRESETS["tiny"]))
    text = torch.randn(1, 5, model.cfg.text_dim, generator=torch.Generator().manual_seed(6))
    for name, overrides, peer in (
            ("rolling_forcing == Rolling Forcing loop", {}, ROLLING_FORCING),
            ("  variant: clean pass sees the denoise context", {"commit_window_len": 0}, ROLLING_FORCING),
            ("  variant: clean-pass window 21", {}, dataclasses.replace(ROLLING_FORCING, commit_window=21))):
        ours = _engine(model, StreamConfig.for_strategy("rolling_forcing", **overrides), StreamInputs(SIZE, text=text),
                       chunks)
        _report(name, ours, RollingReference(model, peer, model.encode_text(text), NoiseSource(SEED),
                                             latent_size=SIZE).run(chunks))


def memory_loops(chunks: int) -> None:
    torch.manual_seed(0)
    model = _sharpen(KnotDiT(PRESETS["tiny"]))
    text = torch.randn(1, 5, model.cfg.text_dim)
    inputs = StreamInputs(SIZE, text=text)
    runs = (("self_forcing == Self Forcing loop", "self_forcing", {}, {}),
            ("longlive absolute == LongLive default model", "longlive", {}, {}),
            ("longlive relative == LongLive infinity model", "longlive", {"sink_positions": "relative"}, {}),
            ("  variant: absolute vs relative sink", "longlive", {}, {"sink_positions": "relative"}),
            ("  variant: window 5", "longlive", {}, {"window_len": 5}))
    for name, strategy, overrides, wrong in runs:
        cfg = StreamConfig.for_strategy(strategy, **overrides)
        ours = _engine(model, cfg, inputs, chunks)
        ref_cfg = cfg.replace(**wrong)
        state = start_stream(model, ref_cfg, inputs, seed=SEED,
                             memory=ReferenceMemory(model, ref_cfg, model.encode_text(text)))
        _report(name, ours, [c.latents for c in itertools.islice(generate(model, ref_cfg, inputs, state), chunks)])


def livetalk_and_causal_forcing(chunks: int) -> None:
    """LiveTalk's and Causal Forcing's loops (model_loops.LOOPS) against tests/reference_peers.py."""
    from knot_core.model_loops import LOOPS
    from tests.test_livetalk_causal_forcing_loops import (
        CF_CASES,
        cf_reference,
        livetalk_case,
        stream_chunks,
        t2v_case,
    )

    model, inputs, ref = livetalk_case(chunks)
    _report("livetalk == LiveTalk loop", stream_chunks(model, LOOPS["livetalk"].sampler.stream, inputs, chunks), ref)
    case = t2v_case()
    for name in CF_CASES:
        ours = stream_chunks(case[0], LOOPS[name].sampler.stream, case[1], chunks)
        _report(f"{name} == Causal Forcing loop", ours, cf_reference(case, name, chunks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=12)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    avatar_forcing(args.chunks)
    rolling_forcing(args.chunks)
    memory_loops(args.chunks)
    livetalk_and_causal_forcing(args.chunks)


if __name__ == "__main__":
    run_script(main)
