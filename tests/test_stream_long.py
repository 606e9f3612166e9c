"""2,000 chunks: memory flat after warm-up, caches never reallocated, RoPE tables reused, reference index bounded."""

import itertools
import os

import pytest
import torch

from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow  # a long property run; CI runs it (.ci/run), `pytest -q` leaves it out
def test_two_thousand_chunks_flat_memory_bounded_positions():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval()
    cfg = StreamConfig(steps=(1000,))
    inp = StreamInputs((4, 4), reference=torch.randn(1, 16, 1, 4, 4))
    state = start_stream(model, cfg, inp, seed=0)
    pointers = [t.data_ptr() for t in (state.memory.kv.k, state.memory.kv.v, state.memory.kv.k_rot)]
    rss, gaps, ropes = {}, set(), {}
    for chunk in itertools.islice(generate(model, cfg, inp, state), 2000):
        gaps.add(chunk.status.ref_index - chunk.status.first_frame)
        if chunk.status.chunk_index in (199, 1999):
            rss[chunk.status.chunk_index] = _rss_bytes()
            ropes[chunk.status.chunk_index] = dict(state.memory._ropes)
    assert chunk.status.first_frame == 1999 * 3
    assert [t.data_ptr() for t in (state.memory.kv.k, state.memory.kv.v, state.memory.kv.k_rot)] == pointers
    # chunk-relative positions: the same few RoPE tables (the same objects) serve every steady chunk
    assert len(ropes[1999]) <= 10 and ropes[1999].keys() == ropes[199].keys()
    assert all(ropes[1999][key] is table for key, table in ropes[199].items())
    assert state.memory.kv.window_frames == list(range(1999 * 3 + 3 - cfg.window_len, 1999 * 3 + 3))
    assert max(gaps) <= cfg.ahead_init + cfg.ahead_step and min(gaps) > 0
    growth = rss[1999] - rss[199]
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB between chunk 200 and 2000"
