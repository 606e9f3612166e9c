"""VideoWriter / video_reader on real MP4 files written with PyAV and decoded back with PyAV."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from knot_core.errors import InputError, KnotError
from knot_core.video_reader import count_frames, probe, read_audio, read_frames
from knot_core.video_writer import AAC_PRIMING, OutputError, VideoWriter, frames_from_decoder

REPO = Path(__file__).resolve().parents[1]
SR = 16000
FPS = 16
CHUNKS = (1, 12, 12, 5)  # the streaming pattern: first frame alone, then 3 latents x 4 frames
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [200, 100, 50], [10, 20, 30]], np.uint8)


def flat(colour_index: int, count: int, size=(32, 48)) -> np.ndarray:
    return np.broadcast_to(COLOURS[colour_index], (count, *size, 3)).copy()  # (T, H, W, 3) uint8


def tone(seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.repeat((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], channels, axis=0)  # (C, N)


def run_child(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_chunked_writes_are_readable_after_every_chunk_with_exact_counts(tmp_path):
    path = tmp_path / "out.mp4"
    total = 0
    with VideoWriter(path, FPS) as writer:
        for i, count in enumerate(CHUNKS):
            writer.write(flat(i, count))
            total += count
            assert writer.frames_written == total and isinstance(writer.frames_written, int)
            assert count_frames(path) == total  # the file on disk, before close(), holds every frame so far
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height, info.has_audio) == (30, Fraction(16), 48, 32, False)
    assert writer.duration_s == pytest.approx(30 / 16) and writer.path == path
    assert count_frames(path) == sum(CHUNKS)


@pytest.mark.parametrize("crf, bound", [(0, 1.0), (18, 1.5)])
def test_flat_colours_survive_encoding(tmp_path, crf, bound):
    path = tmp_path / "flat.mp4"
    frames = np.concatenate([flat(i, 1, (64, 64)) for i in range(len(COLOURS))])
    with VideoWriter(path, FPS, crf=crf) as writer:
        writer.write(frames[:2])
        writer.write(torch.from_numpy(frames[2:]).float() / 255.0)  # float 0..1 torch input, same pixels
    decoded = np.stack(list(read_frames(path))).astype(int)  # (6, 64, 64, 3)
    error = np.abs(decoded - frames.astype(int))
    # RGB -> BT.709 yuv420p -> RGB rounding alone costs ~0.7 levels on average (measured 0.67, max 2).
    assert error.mean() < bound, error.reshape(6, -1).mean(axis=1)
    assert error.max() <= 4


def test_audio_is_muxed_in_sync_and_trimmed_to_the_video_duration(tmp_path):
    path = tmp_path / "talk.mp4"
    audio = np.zeros((2, 3 * SR), np.float32)  # longer than the video: must be cut at the video's end
    onset = SR // 2 + 123
    audio[:, onset : onset + 1600] = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(1600) / SR)
    with VideoWriter(path, FPS, audio=torch.from_numpy(audio), sample_rate=SR) as writer:
        for i, count in enumerate(CHUNKS):
            writer.write(flat(i, count))
    video_s = sum(CHUNKS) / FPS
    info = probe(path)
    assert info.has_audio and info.audio_duration_s == pytest.approx(video_s, abs=1 / SR)  # stored durations
    decoded, rate = read_audio(path)
    assert rate == SR and decoded.shape[0] == 2
    assert 0 <= decoded.shape[1] - video_s * SR < AAC_PRIMING  # a decoder emits whole AAC frames
    heard = int(np.argmax(np.abs(decoded[0]) > 0.1))
    assert abs(heard - onset) <= 16, (heard, onset)  # A/V sync: within 1 ms (measured: 1 sample)


def test_short_audio_is_padded_with_silence_to_the_video_duration(tmp_path):
    path = tmp_path / "pad.mp4"
    with VideoWriter(path, FPS, audio=tone(0.5), sample_rate=SR) as writer:
        writer.write(flat(0, 32))
    assert probe(path).audio_duration_s == pytest.approx(2.0, abs=1 / SR)
    decoded, _ = read_audio(path)
    assert np.abs(decoded[0, SR : 2 * SR]).max() < 1e-3  # after the input ran out: silence


def test_sigkill_leaves_every_written_frame_playable(tmp_path):
    path = tmp_path / "killed.mp4"
    child = run_child(f"""
        import sys, time, numpy as np
        from knot_core.video_writer import VideoWriter
        t = np.arange(4 * {SR}) / {SR}
        audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        writer = VideoWriter({str(path)!r}, {FPS}, audio=audio, sample_rate={SR})
        for i, count in enumerate((1, 12, 12)):
            writer.write(np.full((count, 32, 48, 3), 40 * (i + 1), np.uint8))
        print(writer.frames_written, flush=True)
        time.sleep(60)  # killed here, never reaches close()
    """)
    line = child.stdout.readline()
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL, child.stderr.read()
    assert int(line) == 25
    # Guarantee: every frame of every write() that returned is in the file, decodable, with the right pixels;
    # the audio reaches the video's end minus at most 3 AAC frames (encoder lookahead + whole-frame feeding).
    frames = list(read_frames(path))
    assert len(frames) == 25
    assert abs(float(frames[-1].mean()) - 120) < 2 and abs(float(frames[0].mean()) - 40) < 2
    info = probe(path)
    assert info.frames == 25
    assert 25 / FPS - 3 * AAC_PRIMING / SR <= info.audio_duration_s <= 25 / FPS


def test_disk_full_reports_the_frames_the_file_holds(tmp_path):
    path = tmp_path / "full.mp4"
    child = run_child(f"""
        import resource, signal, numpy as np
        from knot_core.video_writer import VideoWriter, OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: write() fails with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
        rng = np.random.default_rng(0)
        writer = VideoWriter({str(path)!r}, {FPS}, crf=0)
        try:
            for _ in range(50):
                writer.write(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
        except OutputError as exc:
            print(writer.frames_written)
            print(exc)
            writer.close()
    """)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    frames_text, message = out.strip().split("\n", 1)
    held = int(frames_text)
    assert 0 < held < 200 and held % 4 == 0
    assert f"holds the first {held} frames" in message and "playable" in message
    assert count_frames(path) == held  # the partial fragment was cut off: the file ends on a whole one


def test_odd_size_is_refused_before_the_file_exists(tmp_path):
    path = tmp_path / "odd.mp4"
    writer = VideoWriter(path, FPS)
    with pytest.raises(InputError, match=r"48x31 .*even width and height.*48x30"):
        writer.write(np.zeros((2, 31, 48, 3), np.uint8))
    assert not path.exists()


def test_existing_file_is_never_touched_by_a_user_error(tmp_path):
    path = tmp_path / "keep.mp4"
    path.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists.*overwrite=True"):
        VideoWriter(path, FPS)
    writer = VideoWriter(path, FPS, overwrite=True)
    with pytest.raises(InputError, match="odd side"):
        writer.write(np.zeros((2, 33, 33, 3), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        writer.write(np.full((2, 32, 32, 3), np.nan, np.float32))
    writer.close()
    assert path.read_bytes() == b"precious"
    with VideoWriter(path, FPS, overwrite=True) as writer:
        writer.write(flat(0, 3))
    assert count_frames(path) == 3


def test_bad_output_locations_are_refused_up_front(tmp_path):
    with pytest.raises(InputError, match="does not exist; create it"):
        VideoWriter(tmp_path / "missing" / "a.mp4", FPS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="does not exist"):
        VideoWriter(tmp_path / "file" / "a.mp4", FPS)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        VideoWriter(tmp_path / "dir.mp4", FPS)
    with pytest.raises(InputError, match=r"must end in one of"):
        VideoWriter(tmp_path / "a.avi", FPS)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into a read-only directory")
def test_unwritable_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(InputError, match="is not writable"):
            VideoWriter(locked / "a.mp4", FPS)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_exception_inside_with_finalises_the_file_and_propagates(tmp_path):
    path = tmp_path / "interrupted.mp4"
    with pytest.raises(RuntimeError, match="render stopped"):
        with VideoWriter(path, FPS, audio=tone(5.0), sample_rate=SR) as writer:
            writer.write(flat(0, 1))
            writer.write(flat(1, 12))
            raise RuntimeError("render stopped")
    assert count_frames(path) == 13
    assert probe(path).audio_duration_s == pytest.approx(13 / FPS, abs=1 / SR)
    with pytest.raises(InputError, match="is closed"):
        writer.write(flat(0, 1))


@pytest.mark.parametrize("bad, needle", [
    (np.zeros((2, 32, 32), np.uint8), r"\[T, H, W, 3\]"),
    (np.zeros((2, 3, 32, 32), np.float32), "frames_from_decoder"),
    (np.zeros((2, 32, 32, 3), np.int32), "dtype int32"),
    ([[0]], "torch tensor or numpy array"),
])
def test_bad_frames_are_named(tmp_path, bad, needle):
    with pytest.raises(InputError, match=needle):
        VideoWriter(tmp_path / "x.mp4", FPS).write(bad)


def test_size_change_between_chunks_is_refused(tmp_path):
    with VideoWriter(tmp_path / "x.mp4", FPS) as writer:
        writer.write(flat(0, 2, (32, 32)))
        with pytest.raises(InputError, match="64x32 differs from the first chunk's 32x32"):
            writer.write(flat(0, 2, (32, 64)))


@pytest.mark.parametrize("kwargs, needle", [
    ({"fps": 0}, r"fps must be in \(0, 240\]"),
    ({"fps": 29.97}, "Fraction"),
    ({"fps": 16, "audio": tone(1.0)}, "sample_rate in"),
    ({"fps": 16, "audio": tone(1.0), "sample_rate": 22000}, "got 22000"),
    ({"fps": 16, "audio": np.zeros((3, 10), np.float32), "sample_rate": SR}, "C = 1 or 2"),
    ({"fps": 16, "sample_rate": SR}, "without audio"),
    ({"fps": 16, "crf": 60}, "crf must be in"),
])
def test_bad_settings_are_named(tmp_path, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        VideoWriter(tmp_path / "x.mp4", **kwargs)


def test_other_rates_and_the_mpeg4_codec(tmp_path):
    for fps in (25, Fraction(30000, 1001)):
        with VideoWriter(tmp_path / "r.mp4", fps, overwrite=True) as writer:
            writer.write(flat(0, 7))
        assert probe(tmp_path / "r.mp4").fps == fps and count_frames(tmp_path / "r.mp4") == 7
    with VideoWriter(tmp_path / "m4.mp4", FPS, codec="mpeg4") as writer:
        for count in CHUNKS:
            writer.write(flat(2, count))
    assert count_frames(tmp_path / "m4.mp4") == sum(CHUNKS)


def test_closing_without_frames_creates_nothing(tmp_path):
    VideoWriter(tmp_path / "none.mp4", FPS).close()
    assert not (tmp_path / "none.mp4").exists()


def test_frames_from_decoder_maps_minus_one_one_to_uint8():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 6, 1, 1).expand(1, 3, 6, 2, 4)  # (1, 3, T, H, W)
    frames = frames_from_decoder(x)
    assert frames.shape == (6, 2, 4, 3) and frames.dtype == torch.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 64, 128, 191, 255, 255]  # (x + 1) * 127.5, rounded, clamped
    with pytest.raises(InputError, match=r"\[1, 3, T, H, W\]"):
        frames_from_decoder(torch.zeros(2, 3, 1, 2, 2))


def test_reader_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="not a readable video"):
        count_frames(tmp_path / "junk.mp4")
    assert issubclass(OutputError, KnotError)


def test_append_audio_makes_the_same_file_as_audio_given_up_front(tmp_path):
    """A live source's audio, appended chunk by chunk, across encoder restarts (every 2 s): byte-identical output."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (125, 32, 32, 3), dtype=np.uint8)  # 5 s at 25 fps
    audio = (0.3 * rng.standard_normal((1, 125 * 640))).astype(np.float32)  # 16 kHz
    with VideoWriter(tmp_path / "whole.mp4", 25, audio=audio, sample_rate=16000) as whole:
        for i in range(0, 125, 12):
            whole.write(frames[i : i + 12])
    live = VideoWriter(tmp_path / "live.mp4", 25, audio=np.zeros((1, 0), np.float32), sample_rate=16000)
    with live:
        for i in range(0, 125, 12):
            live.append_audio(audio[:, i * 640 : (i + 12) * 640])
            live.write(frames[i : i + 12])
            assert live._audio.shape[1] < 2 * 12 * 640 + 4096  # only what is not in the file yet is kept
    assert (tmp_path / "live.mp4").read_bytes() == (tmp_path / "whole.mp4").read_bytes()
    with pytest.raises(InputError, match="channels"):
        VideoWriter(tmp_path / "x.mp4", 25, audio=np.zeros((1, 0), np.float32),
                    sample_rate=16000).append_audio(np.zeros((2, 10), np.float32))
