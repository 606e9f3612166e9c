"""Peak memory of turning a long audio file into wav2vec2 driving features, chunk by chunk.

Writes a long AAC (.m4a, 44.1 kHz stereo) file by looping the shared speech clip, then, in a
fresh process per duration, decodes it block by block to 16 kHz mono, and asks the AudioSignal
for latent frames the way the engine does (4 at a time, re-asking the knot frame). Reports the
peak resident memory above the baseline (model loaded) next to what the whole clip's features
would take. The wav2vec2 has random weights: `--model tiny` (fast, CPU) or `--model base`
(wav2vec2-base-960h sizes: 10752 values per frame).

    python bench/audio_features_memory.py --minutes 1 10 --model tiny
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from knot_core.errors import run_script  # noqa: E402

SPEECH = ROOT.parent / "shared" / "media" / "speech_en_16k_mono.wav"


def write_long_file(path: Path, minutes: float) -> None:
    from knot_core.audio import load_audio, resample

    if SPEECH.is_file():
        speech, sr = load_audio(SPEECH)
        speech = resample(speech[0], sr, 44100)
    else:  # amplitude-modulated noise stands in for speech
        g = torch.Generator().manual_seed(0)
        speech = 0.3 * torch.randn(44100 * 10, generator=g) * (torch.arange(441000) / 44100 * 3).sin().abs()
    total = int(minutes * 60 * 44100)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "stereo"
        pts, block = 0, 1024
        source = speech.numpy()
        while pts < total:
            idx = (np.arange(pts, min(pts + block, total)) % source.size)
            chunk = np.stack([source[idx], 0.8 * source[idx]]).astype(np.float32)  # fltp: planar [2, n]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 44100, pts, Fraction(1, 44100)
            pts += chunk.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path, model_size: str) -> None:
    import transformers

    from knot_core.signals.audio_features import AudioSignal, Wav2Vec2Features

    torch.manual_seed(0)
    if model_size == "tiny":
        cfg = transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                          intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                          num_conv_pos_embedding_groups=4, vocab_size=8)
    else:
        cfg = transformers.Wav2Vec2Config()  # the wav2vec2-base sizes
    features = Wav2Vec2Features(transformers.Wav2Vec2Model(cfg).eval())
    torch.set_grad_enabled(False)
    base = rss_mib()
    start = time.perf_counter()
    signal = AudioSignal.from_file(path, features)
    loaded = time.perf_counter() - start
    after_decode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total, k, chunks = signal.available_latent_frames(), 0, 0
    peak_rows = 0.0
    while k < total:
        rows = signal.latent_features(k, min(4, total - k))  # 3 new latent frames + the knot frame
        peak_rows = max(peak_rows, rows.numel() * 4 / 2**20)
        k += 3
        chunks += 1
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    whole = signal.num_frames * features.feature_dim * 4 / 2**20
    seconds = signal.wave.numel() / 16000
    print(f"{seconds / 60:5.1f} min | model {model_size} (feature {features.feature_dim}) | {signal.num_frames} "
          f"frames, {total} latent, {chunks} chunks | peak RSS {peak:7.1f} MiB = baseline {base:6.1f} + "
          f"{peak - base:6.1f} MiB (decode+init peak +{after_decode - base:6.1f}) | 16 kHz waveform "
          f"{signal.wave.numel() * 4 / 2**20:5.1f} MiB | whole-clip "
          f"features would be {whole:8.1f} MiB | decode {loaded:5.1f} s, total {elapsed:6.1f} s "
          f"({seconds / elapsed:5.1f}x real time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--model", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/knot_bench_audio"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.model)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    for minutes in args.minutes:
        path = args.workdir / f"speech_{minutes:g}min.m4a"
        if not path.is_file():
            write_long_file(path, minutes)
        # a fresh process per file, so ru_maxrss is this file's peak alone
        subprocess.run([sys.executable, __file__, "--measure", str(path), "--model", args.model], check=True)
    if not math.isfinite(rss_mib()):
        print("(RSS read from /proc/self/status: Linux only)")


if __name__ == "__main__":
    run_script(main)
