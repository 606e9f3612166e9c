"""Peak RSS of a long `render(job)`: memory after 1 minute of video vs after the whole video must match.

A tiny random DiT (tiny-noise-ref-mask) and a tiny Wan VAE at 16x16 px, so 30 minutes of 16 fps video
(28,800 frames) runs on a CPU in minutes; the path is the real one: stream -> streaming VAE decode ->
MP4 fragments on disk -> resume state saved every --save-every chunks, with a muxed audio track.

    python bench/render_memory.py --minutes 30 [--size 16] [--threads 1] [--save-every 1]

Prints peak RSS (ru_maxrss) and current RSS at 1 minute and at the end, and the ratio.
Not a test (bench/ is not collected).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_render import write_tiny_files  # noqa: E402

from knot_core.errors import run_script  # noqa: E402
from knot_core.render import RenderJob, render  # noqa: E402
from knot_core.video_reader import probe  # noqa: E402

FPS = 16


def rss_mib() -> tuple[float, float]:
    """(peak, current) resident set size in MiB (Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    return peak, current


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--size", type=int, default=16, help="video side in pixels (multiple of 16)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames = round(args.minutes * 60 * FPS)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_tiny_files(Path(tmp))
        audio = Path(tmp) / "tone.wav"
        _write_tone(audio, seconds=args.minutes * 60 + 1)
        job = RenderJob(out=Path(tmp) / "long.mp4", frames=frames, seed=0, width=args.size, height=args.size,
                        audio=audio, save_every=args.save_every, settings={"steps": (1000,)}, **files)
        marks: dict[str, tuple[float, float, int]] = {}
        done = [0]
        started = time.perf_counter()

        def on_chunk(piece) -> None:
            done[0] = piece.first_frame + piece.frames.shape[0]
            if "1 min" not in marks and done[0] >= 60 * FPS:
                marks["1 min"] = (*rss_mib(), done[0])

        result = render(job, on_chunk=on_chunk, progress=True)
        marks["end"] = (*rss_mib(), done[0])
        wall = time.perf_counter() - started
        info = probe(job.out)
    print(f"video: {result.frames} frames = {result.frames / FPS / 60:.2f} min at {args.size}x{args.size}, "
          f"{result.chunks} chunks, {wall:.0f} s wall ({result.frames / wall:.0f} frames/s); file check: "
          f"{info.frames} frames, audio {info.audio_duration_s:.1f} s")
    for name, (peak, current, at) in marks.items():
        print(f"{name:>6} (frame {at:>6}): peak RSS {peak:8.1f} MiB, current RSS {current:8.1f} MiB")
    if "1 min" in marks:
        ratio = marks["end"][0] / marks["1 min"][0]
        print(f"peak RSS end / 1 min = {ratio:.4f} ({(ratio - 1) * 100:+.2f} %)")


def _write_tone(path: Path, seconds: float, rate: int = 16000) -> None:
    """A quiet 220 Hz tone as 16-bit WAV (PyAV), the audio muxed into the video."""
    import av

    samples = (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate) * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        for start in range(0, samples.size, rate):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + rate], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


if __name__ == "__main__":
    run_script(main)
