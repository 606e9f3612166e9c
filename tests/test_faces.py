"""Procedural portraits and driving sequences: determinism, parameters change the right pixels, laziness."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from knot_core.errors import InputError
from knot_core.faces import NUM_PARAMS, DrivingFrame, Portrait, regions, render
from knot_core.motion import MotionSequence, MotionSignal, SpeechMouth, loudness_envelope

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPEECH = SHARED / "media" / "speech_en_16k_mono.wav"
SIZE = 64


def box_diff(a: np.ndarray, b: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    return float(np.abs(a[y0:y1, x0:x1].astype(np.float32) - b[y0:y1, x0:x1]).mean())


def outside_diff(a: np.ndarray, b: np.ndarray, box) -> float:
    keep = np.ones(a.shape[:2], bool)
    x0, y0, x1, y1 = box
    keep[y0:y1, x0:x1] = False
    return float(np.abs(a.astype(np.float32) - b)[keep].mean())


def test_deterministic_by_seed_and_varied():
    assert Portrait.random(5) == Portrait.random(5)
    a, b = render(Portrait.random(5), DrivingFrame(yaw=0.3)), render(Portrait.random(5), DrivingFrame(yaw=0.3))
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    others = [render(Portrait.random(s), DrivingFrame()) for s in range(6, 10)]
    assert all(np.abs(a.astype(int) - o).mean() > 10 for o in others)  # identities differ clearly
    assert len({Portrait.random(s).hair_style for s in range(40)}) >= 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mouth_opening_changes_only_the_mouth_box(seed):
    p = Portrait.random(seed)
    closed, opened = render(p, DrivingFrame()), render(p, DrivingFrame(mouth_open=1.0))
    box = regions(p, DrivingFrame()).mouth
    assert box_diff(closed, opened, box) > 10.0
    assert outside_diff(closed, opened, box) < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blink_changes_only_the_eye_box(seed):
    p = Portrait.random(seed)
    open_, shut = render(p, DrivingFrame()), render(p, DrivingFrame(blink=1.0))
    box = regions(p, DrivingFrame()).eyes
    assert box_diff(open_, shut, box) > 8.0
    assert outside_diff(open_, shut, box) < 0.5


def skin_centroid_x(img: np.ndarray, skin) -> float:
    mask = np.abs(img.astype(int) - np.array(skin)).sum(-1) < 12
    return float(np.nonzero(mask)[1].mean())


@pytest.mark.parametrize("seed", [0, 3])
def test_yaw_moves_the_face_centre(seed):
    p = Portrait.random(seed)
    left, mid, right = (render(p, DrivingFrame(yaw=y), 128) for y in (-1.0, 0.0, 1.0))
    xl, xm, xr = (skin_centroid_x(im, p.skin) for im in (left, mid, right))
    assert xl < xm - 2 and xr > xm + 2
    cl, cr = regions(p, DrivingFrame(yaw=-1.0)).face_centre[0], regions(p, DrivingFrame(yaw=1.0)).face_centre[0]
    assert cl < SIZE / 2 < cr


def test_driving_vector_round_trip_and_errors():
    f = DrivingFrame(0.1, -0.2, 0.3, 0.4, -0.5, 0.6, -0.7, 0.8, 0.9)
    assert np.allclose(DrivingFrame.from_vector(f.vector()).vector(), [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, -0.7, 0.8, 0.9])
    with pytest.raises(InputError, match="9"):
        DrivingFrame.from_vector([0.0, 1.0])
    with pytest.raises(InputError, match="16"):
        render(Portrait.random(0), f, size=8)


def test_motion_is_deterministic_smooth_and_random_access():
    a, b = MotionSequence(4, 500), MotionSequence(4, 500)
    rows = a.frames(0, 500)
    assert rows.shape == (500, NUM_PARAMS) and rows.dtype == np.float32
    assert np.array_equal(rows, b.frames(0, 500))
    assert np.array_equal(a.frames(123, 7), rows[123:130])  # random access == sequential
    assert not np.array_equal(rows, MotionSequence(5, 500).frames(0, 500))
    head = rows[:, :5]
    assert np.abs(np.diff(head, axis=0)).max() < 0.1  # smooth at 25 fps
    assert head.std(0).min() > 0.05  # but moving
    blinks = rows[:, 7]
    assert 3 <= (np.diff((blinks > 0.5).astype(int)) == 1).sum() <= 8  # one per 3 s slot
    with pytest.raises(InputError, match="outside"):
        a.frames(498, 5)


def test_ten_thousand_frames_are_generated_lazily():
    seq = MotionSequence(1, 10_000)
    tracemalloc.start()
    it = iter(seq)
    last = None
    for i, frame in enumerate(it):
        if i == 100:  # warm-up allocations (numpy, generators) done; measure the next 9,900 frames
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        last = frame
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert i == 9_999 and isinstance(last, DrivingFrame)
    assert current - base < 20_000  # nothing accumulates: 9,900 materialised float32 rows alone are 356 kB
    assert peak - base < 400_000
    assert seq.frame(9_999) == last
    unbounded = MotionSequence(1)
    assert unbounded.frames(10**7, 2).shape == (2, NUM_PARAMS)


def test_motion_signal_serves_latent_groups():
    seq = MotionSequence(2, 100)
    sig = MotionSignal(seq)
    feats = sig.latent_features(0, 3)  # latent 0 = frame 0 x4, latent k = frames 4k-3..4k
    assert tuple(feats.shape) == (3, 4, NUM_PARAMS)
    rows = seq.frames(0, 9)
    assert np.allclose(feats[0].numpy(), rows[[0, 0, 0, 0]])
    assert np.allclose(feats[2].numpy(), rows[5:9])
    assert sig.available_latent_frames() == 25


def test_idle_motion_is_drawn_but_not_in_the_driving_signal():
    """The benchmark's content the knot must carry: the head drifts several pixels per 12-frame chunk in what is
    drawn, while the signal the model gets leaves it out (and everything else is the same)."""
    seq = MotionSequence(3, 500, idle=1.0)
    drawn, signal = seq.frames(0, 500), seq.signal_frames(0, 500)
    assert np.array_equal(signal, MotionSequence(3, 500).frames(0, 500))  # idle=0 draws exactly the signal
    idle = drawn - signal
    assert np.abs(idle[:, 5:]).max() == 0  # mouth, blink, brows untouched
    px_per_chunk = np.abs(np.diff(idle[::12, 3], axis=0)).mean() * 0.08 * 96  # tx -> pixels at 96 px (faces.py)
    assert 1.5 < px_per_chunk < 6
    assert np.abs(np.diff(idle, axis=0)).max() < 0.15  # smooth at 25 fps: about a pixel per frame at most
    feats = MotionSignal(seq).latent_features(2, 1)[0].numpy()  # latent 2 = frames 5..8
    assert np.array_equal(feats, signal[5:9])


@pytest.mark.skipif(not SPEECH.is_file(), reason=f"shared test media not found at {SPEECH}")
def test_speech_envelope_drives_the_mouth():
    env = loudness_envelope(SPEECH)
    assert abs(len(env) - 15.3 * 25) < 3  # 15.3 s of speech at 25 fps
    assert env.min() == 0.0 and env.max() > 0.9
    assert 0.2 < (env > 0.5).mean() < 0.9  # syllables and pauses, not a constant
    seq = MotionSequence(0, 500, mouth=SpeechMouth(env))
    mouth = seq.frames(0, 500)[:, 5]
    assert np.allclose(mouth[: len(env)], env) and np.all(mouth[len(env):] == 0)


def test_silence_and_a_constant_level_keep_the_mouth_closed():
    from knot_core.motion import loudness_of

    rate = 16000
    t = np.arange(3 * rate) / rate
    assert np.all(loudness_of(np.zeros(3 * rate), rate) == 0.0)  # silence: closed, not wide open
    assert loudness_of(0.3 * np.sin(2 * np.pi * 220 * t), rate).max() < 0.02  # a constant hum: no syllables
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)  # 3 syllables/s with pauses
    env = loudness_of(speech, rate)
    assert env.max() > 0.9 and env.min() == 0.0


def test_missing_audio_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        loudness_envelope(tmp_path / "nope.wav")


def test_blink_interval_sets_one_blink_per_slot_and_defaults_to_every_render():
    rows = MotionSequence(4, 1500).frames(0, 1500)
    assert np.array_equal(rows, MotionSequence(4, 1500, blink_interval=3.0).frames(0, 1500))
    onsets = np.diff((MotionSequence(4, 1500, blink_interval=1.0).frames(0, 1500)[:, 7] > 0.5).astype(int)) == 1
    assert 58 <= onsets.sum() <= 60  # one per 1 s slot over 60 s (a slot's blink may straddle the clip's end)
    others = MotionSequence(4, 1500, blink_interval=1.0).frames(0, 1500)
    assert np.array_equal(np.delete(others, 7, 1), np.delete(rows, 7, 1))  # only the blinks change
    with pytest.raises(InputError, match="blink_interval"):
        MotionSequence(4, 100, blink_interval=0.3)
