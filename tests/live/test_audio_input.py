"""Live audio input: placement on the stream clock, the flood bound, silence for gaps, causal loudness."""

from __future__ import annotations

import numpy as np
import pytest

from knot_core.demo import DEMO_SPEECH
from knot_core.errors import InputError
from knot_core.live.audio_input import PEAK_FLOOR_DB, AudioTimeline, LiveLoudness, LiveMouth
from knot_core.motion import decode_audio, loudness_of

RATE = 16000


def timeline(**kw) -> AudioTimeline:
    return AudioTimeline(RATE, slack_s=kw.get("slack_s", 0.1), max_ahead_s=kw.get("max_ahead_s", 2.0), started=100.0)


def test_real_time_pushes_are_placed_back_to_back_behind_the_live_position():
    t = timeline()
    # the first push arrives 1 s in: 0.9 s of silence before it (the live position minus the 0.1 s slack)
    assert t.push(np.full(320, 0.5), now=101.0) == 0
    assert t.end == int(0.9 * RATE) + 320 and t.counts.silence == int(0.9 * RATE)
    t.push(np.full(320, 0.25), now=101.02)  # on time: right after the first, no gap
    assert t.end == int(0.9 * RATE) + 640 and t.counts.silence == int(0.9 * RATE)
    assert np.all(t.read(int(0.9 * RATE), int(0.9 * RATE) + 640) == np.repeat([0.5, 0.25], 320).astype(np.float32))
    assert t.source_of(int(0.9 * RATE) + 330) == (330, 101.02)
    assert t.source_of(10)[0] == -1  # silence has no source
    t.push(np.ones(320), now=103.0)  # after a 2 s pause: placed live again, the pause is silence
    assert t.end == int(2.9 * RATE) + 320


def test_a_flood_is_cut_at_max_ahead_and_counted():
    t = timeline(max_ahead_s=2.0)
    dropped = t.push(np.zeros(10 * RATE), now=100.5)  # 10 s at once, 0.5 s into the stream
    assert t.end == int(2.5 * RATE)  # up to 2 s ahead of the live position, no further
    assert dropped == 10 * RATE - int(2.1 * RATE) == t.counts.dropped_flood  # placed at 0.4 s: 2.1 s kept
    assert t.push(np.zeros(RATE), now=100.625) == RATE - 2000  # still full: only the 0.125 s since fits


def test_release_frees_what_was_read_and_buffer_stays_bounded():
    t = timeline(max_ahead_s=1.0)
    for i in range(200):  # 4 s of real-time pushes, the reader releasing as it goes
        t.push(np.zeros(320), now=100.0 + 0.02 * (i + 1))
        t.release(t.live_position(100.0 + 0.02 * i) - RATE // 2)
    assert t.buffered() < int(0.7 * RATE)
    with pytest.raises(InputError, match="NaN"):
        t.push(np.array([np.nan]))


def test_wait_for_returns_false_at_the_deadline_and_fill_silence_reaches_the_position():
    import time

    t = AudioTimeline(RATE, slack_s=0.0, max_ahead_s=1.0)
    assert not t.wait_for(1000, time.monotonic() + 0.05)
    t.fill_silence(1000)
    assert t.end == 1000 and t.wait_for(1000, time.monotonic())


def test_live_loudness_matches_the_offline_envelope_once_the_peak_is_known():
    samples, rate = decode_audio(DEMO_SPEECH)
    hop = rate // 25
    offline = loudness_of(samples, rate)
    live = LiveLoudness(25)
    live.peak = 20 * np.log10(np.sqrt(np.mean(samples[: len(samples) // hop * hop].reshape(-1, hop) ** 2, 1)).max())
    online = np.array([live.frame(samples[i * hop : (i + 1) * hop]) for i in range(len(samples) // hop)])
    # same dB mapping and smoothing: with the running peak set to the clip's loudest frame
    assert np.allclose(online[:5], offline[:5], atol=0.02)  # the peak decays 3 dB/s, so equal only at first
    assert np.corrcoef(online, offline[: len(online)])[0, 1] > 0.95


def test_silence_and_room_noise_keep_the_mouth_closed():
    live = LiveLoudness(25)
    noise = np.random.default_rng(0).normal(0, 10 ** ((PEAK_FLOOR_DB - 45) / 20), 640).astype(np.float32)
    assert [live.frame(np.zeros(640, np.float32)) for _ in range(5)] == [0.0] * 5
    assert live.frame(noise) == 0.0


def test_live_mouth_serves_set_frames_and_forgets_old_ones():
    mouth = LiveMouth(keep=8)
    for f in range(20):
        mouth.set(f, f / 20)
    assert np.allclose(mouth.opening(15, 4), [0.75, 0.8, 0.85, 0.9])
    assert mouth.opening(0, 2).tolist() == [0.0, 0.0]  # forgotten (the engine never asks that far back)
