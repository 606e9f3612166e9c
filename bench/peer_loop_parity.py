"""Max difference, chunk by chunk, between our stream set to LiveTalk's / Causal Forcing's loops and the cache-free
references of the authors' loops (tests/reference_peers.py), fp32 on a tiny random DiT: the figures the README
quotes. Run from the checkout: `python bench/peer_loop_parity.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.model_loops import LOOPS  # noqa: E402
from tests.test_livetalk_causal_forcing_loops import (  # noqa: E402
    CF_CASES,
    cf_reference,
    livetalk_case,
    stream_chunks,
    t2v_case,
)


def _row(name: str, ours, ref) -> None:
    diffs = [float((a - b).abs().max()) for a, b in zip(ours, ref, strict=True)]
    print(f"{name:26s} chunks {len(diffs):2d}  max {max(diffs):.2e}  per chunk " + " ".join(f"{d:.1e}" for d in diffs))


def main() -> None:
    torch.set_num_threads(1)
    model, inputs, ref = livetalk_case()
    _row("livetalk", stream_chunks(model, LOOPS["livetalk"].sampler.stream, inputs, len(ref)), ref)
    case = t2v_case()
    for name, chunks in CF_CASES.items():
        ours = stream_chunks(case[0], LOOPS[name].sampler.stream, case[1], chunks)
        _row(name, ours, cf_reference(case, name, chunks))


if __name__ == "__main__":
    main()
