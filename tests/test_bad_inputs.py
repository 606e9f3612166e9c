"""A catalogue of bad and odd inputs through every command, as a new user would give them, one case a line.

Each case runs the command line's `main` in process and asserts: no traceback, the expected fragment of the
one-line message, the exit status (2 for a user error, 1 for a batch with failed jobs, 0 where an odd input
is fine), and that every file that existed before is byte-identical afterwards (failures write nothing).
A few cases run in a subprocess: SIGINT / SIGTERM / SIGKILL mid-render, and a disk that fills up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_render import one_thread  # noqa: F401 - autouse fixture: one torch thread per test

from knot_core.checkpoints import save_knot_model
from knot_core.cli import main
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.file_sink import state_path
from knot_core.model_file import SamplerDefaults
from knot_core.vae import VAEConfig, WanVAE
from knot_core.video_reader import count_frames

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


class Pickled:  # any class: a checkpoint holding its instance cannot be loaded weights-only
    pass


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """IEEE-float WAV (format 3), which may hold NaN."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
                     + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def write_cmyk_tiff(path: Path, h: int = 64, w: int = 64) -> None:
    """An uncompressed CMYK TIFF (Photometric 5, 4 samples a pixel), as print workflows make them."""
    pixels = np.zeros((h, w, 4), np.uint8)
    pixels[..., 0], pixels[..., 1] = 30, np.arange(w, dtype=np.uint8)[None] * 3
    data = pixels.tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 5),
               (273, 4, 1, 8), (277, 3, 1, 4), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                   struct.pack("<I", value)) for tag, kind, count, value in entries)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + ifd + b"\x00\x00\x00\x00")


def write_exif_rotated_jpeg(path: Path, image: np.ndarray) -> None:
    """A JPEG with an EXIF Orientation 6 (rotate 90 degrees clockwise) segment, as phones save portraits."""
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) \
        + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    sampler = SamplerDefaults(StreamConfig(steps=(1000, 500)), fps=16, resolution=(32, 32))
    save_knot_model(KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval(), d / "model.safetensors", sampler=sampler)
    save_file(WanVAE(VAEConfig.tiny()).state_dict(), str(d / "vae.safetensors"))
    rng = np.random.default_rng(0)
    photo = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(d / "ref.png"), photo)
    cv2.imwrite(str(d / "gray.png"), photo[..., 0])
    cv2.imwrite(str(d / "rgba.png"), np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)]))
    cv2.imwrite(str(d / "deep.png"), photo.astype(np.uint16) * 257)
    write_cmyk_tiff(d / "cmyk.tif")
    write_exif_rotated_jpeg(d / "rotated.jpg", photo)
    anim = cv2.Animation()
    anim.frames, anim.durations = [photo, 255 - photo], [100, 100]
    cv2.imwriteanimation(str(d / "anim.gif"), anim)
    cv2.imwrite(str(d / "one.png"), photo[:1, :1])
    cv2.imwrite(str(d / "small.png"), photo[:40, :40])
    cv2.imwrite(str(d / "huge.png"), np.zeros((10000, 10000, 3), np.uint8))
    cv2.imencode(".png", photo)[1].tofile(str(d / "portrait_ü_写真.png"))
    (d / "empty.png").write_bytes(b"")
    (d / "trunc.png").write_bytes((d / "ref.png").read_bytes()[:200])
    (d / "text.png").write_text("this is not a picture\n")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (d / "notes.txt").write_text("hello\n")
    (d / "empty.bin").write_bytes(b"")
    (d / "trunc.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:3000])
    torch.save({"weights": torch.zeros(2), "extra": Pickled()}, d / "pickled.pth")
    t = np.arange(8000) / 16000
    write_wav(d / "speech.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    write_wav(d / "silent_header.wav", np.zeros(0))
    write_float_wav(d / "nan.wav", np.full(8000, np.nan, np.float32))
    (d / "expr.json").write_text('{"fps": 25, "frames": [[0.1, 0.2], [0.3, 0.4]]}')
    (d / "expr.csv").write_text("a,b\n0.1,0.2\n0.3,0.4\n")
    (d / "expr_nan.csv").write_text("a,b\n0.1,nan\n")
    (d / "expr_words.csv").write_text("a,b\nx,y\n")
    (d / "expr_empty.csv").write_text("")
    (d / "expr_bin.csv").write_bytes(bytes(range(256)))
    pose = '{"people": [], "canvas_width": 64, "canvas_height": 64}'
    nan_pose = '{"people": [{"pose_keypoints_2d": [NaN' + ", 1" * 53 + ']}], "canvas_width": 64, "canvas_height": 64}'
    for name, files in {"pose": {"0.json": pose}, "pose_nan": {"0.json": nan_pose}, "pose_bin": {"0.json": b"\x00\xff"},
                        "pose_bad": {"0.json": "{not json"}, "pose_empty": {}}.items():
        (d / name).mkdir()
        for file, content in files.items():
            target = d / name / file
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    save_file({"context": torch.full((4, 32), float("nan"))}, str(d / "text_nan.safetensors"))
    save_file({"context": torch.zeros(4, 7)}, str(d / "text_shape.safetensors"))
    (d / "existing.mp4").write_bytes(b"precious video")
    job = {"reference": "ref.png", "model": "model.safetensors", "vae": "vae.safetensors", "frames": 9}
    jobs = {"jobs_bin.jsonl": bytes(range(256)), "jobs_empty.jsonl": "", "jobs.txt": json.dumps(job),
            "jobs_badline.jsonl": "{not json\n", "jobs_bad.toml": "[[job]\n", "jobs_list.jsonl": "[1, 2]\n",
            "jobs_unknown.jsonl": json.dumps({**job, "out": "o.mp4", "sped": 1}),
            "jobs_noout.jsonl": json.dumps(job), "jobs_exists.jsonl": json.dumps({**job, "out": "existing.mp4"}),
            "jobs_self.jsonl": json.dumps({**job, "out": "ref.png"}),
            "jobs_nan.jsonl": '{"reference": "ref.png", "model": "model.safetensors", "vae": "vae.safetensors", '
                              '"seconds": NaN, "out": "o.mp4"}',
            "jobs_settings.jsonl": json.dumps({**job, "out": "o.mp4", "settings": [1]}),
            "jobs_window.jsonl": json.dumps({**job, "out": "o.mp4", "window_len": 100000}),
            "jobs_seed.jsonl": json.dumps({**job, "out": "o.mp4", "seed": "five"}),
            "jobs_notoml.toml": "title = 'no jobs'\n"}
    for name, content in jobs.items():
        (d / name).write_bytes(content) if isinstance(content, bytes) else (d / name).write_text(content)
    return {p.name: str(p) for p in d.iterdir()} | {"dir": str(d)}


R = ["render", "--reference", "{ref.png}", "--model", "{model.safetensors}", "--vae", "{vae.safetensors}",
     "--out", "{out}", "--frames", "9", "-q"]


def render(*extra: str, **replace: str) -> list[str]:
    """The render command with some flags replaced (reference=..., model=..., vae=...) and extra flags."""
    argv = list(R)
    for flag, value in replace.items():
        argv[argv.index("--" + flag) + 1] = value
    return [*argv, *extra]


DEMO = ["demo", "--seconds", "0.5", "-q"]

# (id, argv with {input} placeholders; {out} is a fresh path in the case's folder, expected fragment, exit status)
CASES = [
    # render: missing, empty, truncated, wrong type
    ("render missing reference", render(reference="{dir}/nope.png"), "reference image", 2),
    ("render missing model", render(model="{dir}/nope.safetensors"), "model", 2),
    ("render missing vae", render(vae="{dir}/nope.safetensors"), "VAE", 2),
    ("render missing audio", render("--audio", "{dir}/nope.wav"), "audio", 2),
    ("render missing expression", render("--expression", "{dir}/nope.csv"), "expression file", 2),
    ("render missing text", render("--text", "{dir}/nope.safetensors"), "text embedding", 2),
    ("render missing pose folder", render("--pose", "{dir}/nope"), "pose folder", 2),
    ("render reference is a folder", render(reference="{dir}"), "does not exist (or is not a file)", 2),
    ("render empty reference", render(reference="{empty.png}"), "is not a readable image", 2),
    ("render truncated reference", render(reference="{trunc.png}"), "is not a readable image", 2),
    ("render text as reference", render(reference="{text.png}"), "is not a readable image", 2),
    ("render binary as reference", render(reference="{binary.bin}"), "is not a readable image", 2),
    ("render 1x1 reference", render(reference="{one.png}"), "1x1 px; a portrait needs at least 64 px", 2),
    ("render 40x40 reference", render(reference="{small.png}"), "40x40 px; a portrait needs at least 64", 2),
    ("render 10000x10000 reference", render(reference="{huge.png}"), "give at most 8192 px on a side", 2),
    ("render empty model", render(model="{empty.bin}"), "is neither a safetensors file nor", 2),
    ("render text as model", render(model="{notes.txt}"), "is neither a safetensors file nor", 2),
    ("render binary as model", render(model="{binary.bin}"), "is neither a safetensors file nor", 2),
    ("render truncated model", render(model="{trunc.safetensors}"), "trunc.safetensors", 2),
    ("render pickled model", render(model="{pickled.pth}"), "holds pickled Python objects", 2),
    ("render vae as model", render(model="{vae.safetensors}"), "vae.safetensors", 2),
    ("render pickled vae", render(vae="{pickled.pth}"), "holds pickled Python objects", 2),
    ("render text as vae", render(vae="{notes.txt}"), "notes.txt", 2),
    ("render truncated vae", render(vae="{trunc.safetensors}"), "trunc.safetensors", 2),
    ("render model as vae", render(vae="{model.safetensors}"), "model.safetensors", 2),
    ("render binary audio", render("--audio", "{binary.bin}"), "binary.bin", 2),
    ("render empty audio", render("--audio", "{empty.bin}"), "empty.bin", 2),
    ("render image as audio", render("--audio", "{ref.png}"), "ref.png", 2),
    ("render header-only wav", render("--audio", "{silent_header.wav}"), "no decodable audio samples", 2),
    ("render NaN wav", render("--audio", "{nan.wav}"), "NaN or infinite", 2),
    ("render binary expression", render("--expression", "{expr_bin.csv}"), "is a binary file, not text", 2),
    ("render empty expression", render("--expression", "{expr_empty.csv}"), "the file is empty", 2),
    ("render NaN expression", render("--expression", "{expr_nan.csv}"), "NaN or infinite coefficient", 2),
    ("render words as expression", render("--expression", "{expr_words.csv}"), "must be a number", 2),
    ("render expression for a model without one", render("--expression", "{expr.json}"), "no expression adapter", 2),
    ("render plain CSV without a rate", render("--expression", "{expr.csv}"), "--expression-fps", 2),
    ("render plain CSV with a rate", render("--expression", "{expr.csv}", "--expression-fps", "60"),
     "no expression adapter", 2),
    ("render expression fps 0", render("--expression", "{expr.csv}", "--expression-fps", "0"), "expression_fps=0", 2),
    ("render binary pose json", render("--pose", "{pose_bin}"), "is a binary file, not text", 2),
    ("render NaN pose json", render("--pose", "{pose_nan}"), "holds NaN or infinite keypoint values", 2),
    ("render invalid pose json", render("--pose", "{pose_bad}"), "is not valid JSON", 2),
    ("render empty pose folder", render("--pose", "{pose_empty}"), "holds no OpenPose .json files", 2),
    ("render pose for a model without one", render("--pose", "{pose}"), "no pose adapter", 2),
    ("render NaN text embedding", render("--text", "{text_nan.safetensors}"), "NaN or infinite", 2),
    ("render wrong-shape text embedding", render("--text", "{text_shape.safetensors}"), "expected [L, 32]", 2),
    ("render text file as embedding", render("--text", "{notes.txt}"), "notes.txt", 2),
    # render: lengths and numbers
    ("render seconds inf", [*R[:-3], "-q", "--seconds", "inf"], "seconds=inf; give a finite number", 2),
    ("render seconds nan", [*R[:-3], "-q", "--seconds", "nan"], "seconds=nan", 2),
    ("render seconds 0", [*R[:-3], "-q", "--seconds", "0"], "seconds=0.0", 2),
    ("render seconds negative", [*R[:-3], "-q", "--seconds", "-2"], "seconds=-2.0", 2),
    ("render frames 0", render(frames="0"), "frames=0", 2),
    ("render frames negative", render(frames="-5"), "frames=-5", 2),
    ("render frames not a number", render(frames="ten"), "invalid int value: 'ten'", 2),
    ("render no length", [*R[:-3], "-q"], "no length given", 2),
    ("render fps 0", render("--fps", "0"), "fps=0", 2),
    ("render fps negative", render("--fps", "-25"), "fps=-25", 2),
    ("render fps huge", render("--fps", "100000"), "fps=100000", 2),
    ("render width 40", render("--width", "40", "--height", "32"), "width=40", 2),
    ("render width without height", render("--width", "32"), "give both or neither", 2),
    ("render crf 99", render("--crf", "99"), "crf=99", 2),
    ("render seed -1", render("--seed", "-1"), "seed=-1", 2),
    ("render seed 2**64", render("--seed", str(2**64)), "seed=", 2),
    ("render threads 0", render("--threads", "0"), "--threads 0", 2),
    ("render threads -1", render("--threads", "-1"), "--threads -1", 2),
    ("render device banana", render("--device", "banana"), "device='banana'", 2),
    ("render device cuda without CUDA", render("--device", "cuda:7"), "device='cuda:7', but it has", 2),
    ("render dtype fp8", render("--dtype", "fp8"), "invalid choice: 'fp8'", 2),
    ("render fit zoom", render("--fit", "zoom"), "invalid choice: 'zoom'", 2),
    ("render compile turbo", render("--compile", "turbo"), "invalid choice: 'turbo'", 2),
    ("render save-every 0", render("--save-every", "0"), "save_every=0", 2),
    # render: settings
    ("render window 100000", render("--window-len", "100000"), "window_len=100000; must be in [1, 64]", 2),
    ("render window 0", render("--window-len", "0"), "window_len=0", 2),
    ("render chunk 0", render("--chunk-len", "0"), "chunk_len=0", 2),
    ("render knot_len >= chunk_len", render("--knot-len", "3"), "knot_len=3; must be in [0, chunk_len-1]", 2),
    ("render steps with a word", render("--steps", "1000,x"), "steps='1000,x'", 2),
    ("render steps increasing", render("--steps", "500,1000"), "strictly decreasing", 2),
    ("render steps over 1000", render("--steps", "2000"), "each step must be in (0, 1000]", 2),
    ("render shift nan", render("--shift", "nan"), "shift=nan; give a finite number", 2),
    ("render shift inf", render("--shift", "inf"), "shift=inf", 2),
    ("render shift 0", render("--shift", "0"), "shift=0.0", 2),
    ("render fusion weight 2", render("--fusion-weight", "2"), "fusion_weight=2.0; must be in [0, 1]", 2),
    ("render fusion weight nan", render("--fusion-weight", "nan"), "fusion_weight=nan", 2),
    ("render ahead step 0", render("--ahead-step", "0"), "ahead_step=0", 2),
    ("render strategy banana", render("--strategy", "banana"), "invalid choice: 'banana'", 2),
    ("render longlive with a knot", render("--strategy", "longlive", "--knot-len", "1"),
     "only the 'knot' strategy uses a temporal knot", 2),
    # render: outputs
    ("render existing output", render("--out", "{existing.mp4}"), "already exists; choose another name", 2),
    ("render output is the reference", render("--out", "{ref.png}", "--overwrite"), "is also an input", 2),
    ("render output is the audio", render("--audio", "{speech.wav}", "--out", "{speech.wav}", "--overwrite"),
     "is also an input", 2),
    ("render output .txt", render("--out", "{dir}/x.txt"), "must end in one of", 2),
    ("render output is a folder", render("--out", "{dir}"), "is a folder", 2),
    ("render output folder missing", render("--out", "{dir}/no/such/x.mp4"), "does not exist; create it first", 2),
    ("render output folder read-only", render("--out", "/proc/knot.mp4"), "is not writable", 2),
    ("render resume without a state", render("--out", "{out}", "--resume"), "nothing to resume", 2),
    ("render resume and overwrite", render("--out", "{out}", "--resume", "--overwrite"),
     "resume and overwrite both set", 2),
    ("render no reference flag", ["render", "--model", "m", "--vae", "v", "--out", "o.mp4"],
     "the following arguments are required: --reference", 2),
    # render: odd but fine images (rendered)
    ("render grayscale reference", render("--out", "{out}", reference="{gray.png}"), "wrote", 0),
    ("render RGBA reference", render("--out", "{out}", reference="{rgba.png}"), "wrote", 0),
    ("render 16-bit reference", render("--out", "{out}", reference="{deep.png}"), "wrote", 0),
    ("render CMYK reference", render("--out", "{out}", reference="{cmyk.tif}"), "wrote", 0),
    ("render EXIF-rotated reference", render("--out", "{out}", reference="{rotated.jpg}"), "wrote", 0),
    ("render animated reference", render("--out", "{out}", reference="{anim.gif}"), "wrote", 0),
    ("render non-ASCII path", render("--out", "{out_ü}", reference="{portrait_ü_写真.png}"), "wrote", 0),
    # demo
    ("demo seconds inf", [*DEMO, "--out", "{out}", "--seconds", "inf"], "seconds=inf", 2),
    ("demo seconds nan", [*DEMO, "--out", "{out}", "--seconds", "nan"], "seconds=nan", 2),
    ("demo seconds 0", [*DEMO, "--out", "{out}", "--seconds", "0"], "seconds=0.0", 2),
    ("demo frames 0", [*DEMO[:1], "--frames", "0", "--out", "{out}"], "frames=0", 2),
    ("demo seed -1", [*DEMO, "--out", "{out}", "--seed", "-1"], "seed=-1", 2),
    ("demo portrait seed -1", [*DEMO, "--out", "{out}", "--portrait-seed", "-1"], "portrait_seed=-1", 2),
    ("demo portrait seed 2**40", [*DEMO, "--out", "{out}", "--portrait-seed", str(2**40)], "portrait_seed=", 2),
    ("demo threads 0", [*DEMO, "--out", "{out}", "--threads", "0"], "--threads 0", 2),
    ("demo threads -1", [*DEMO, "--out", "{out}", "--threads", "-1"], "--threads -1", 2),
    ("demo knot_len 3", [*DEMO, "--out", "{out}", "--knot-len", "3"], "knot_len=3", 2),
    ("demo window 100000", [*DEMO, "--out", "{out}", "--window-len", "100000"], "window_len=100000", 2),
    ("demo crf -1", [*DEMO, "--out", "{out}", "--crf", "-1"], "crf=-1", 2),
    ("demo existing output", [*DEMO, "--out", "{existing.mp4}"], "already exists", 2),
    ("demo output is the audio", [*DEMO, "--out", "{speech.wav}", "--audio", "{speech.wav}", "--overwrite"],
     "is also an input", 2),
    ("demo missing audio", [*DEMO, "--out", "{out}", "--audio", "{dir}/nope.wav"], "does not exist", 2),
    ("demo binary audio", [*DEMO, "--out", "{out}", "--audio", "{binary.bin}"], "binary.bin", 2),
    ("demo NaN audio", [*DEMO, "--out", "{out}", "--audio", "{nan.wav}"], "NaN or infinite", 2),
    ("demo output .txt", [*DEMO, "--out", "{dir}/d.txt"], "must end in one of", 2),
    ("demo output folder missing", [*DEMO, "--out", "{dir}/no/d.mp4"], "does not exist; create it first", 2),
    ("demo resume without a state", [*DEMO, "--out", "{out}", "--resume"], "nothing to resume", 2),
    ("demo renders", [*DEMO, "--out", "{out}"], "wrote", 0),
    # live (checked before the server or the model starts)
    ("live port 99999", ["live", "--port", "99999"], "port 99999; give a port from 1 to 65535", 2),
    ("live port -1", ["live", "--port", "-1"], "port -1; give a port from 1 to 65535", 2),
    ("live portrait seed -5", ["live", "--portrait-seed", "-5"], "portrait_seed=-5; give a whole number", 2),
    ("live NaN seconds", ["live", "--seconds", "nan"], "seconds=nan; give a positive, finite duration", 2),
    ("live infinite seconds", ["live", "--seconds", "inf"], "seconds=inf; give a positive, finite duration", 2),
    ("live negative seconds", ["live", "--seconds", "-1"], "seconds=-1.0; give a positive, finite duration", 2),
    ("live NaN motion amount", ["live", "--motion-amount", "nan"], "motion amount nan; give 0..1", 2),
    ("live motion amount 2", ["live", "--motion-amount", "2"], "motion amount 2.0; give 0..1", 2),
    # batch
    ("batch missing jobs file", ["batch", "{dir}/nope.jsonl"], "does not exist", 2),
    ("batch binary jobs file", ["batch", "{jobs_bin.jsonl}"], "is a binary file, not text", 2),
    ("batch empty jobs file", ["batch", "{jobs_empty.jsonl}"], "holds no jobs", 2),
    ("batch .txt jobs file", ["batch", "{jobs.txt}"], "use .jsonl (JSON Lines) or .toml", 2),
    ("batch invalid JSON line", ["batch", "-q", "{jobs_badline.jsonl}"], "not valid JSON", 1),
    ("batch invalid TOML", ["batch", "{jobs_bad.toml}"], "is not valid TOML", 2),
    ("batch TOML without jobs", ["batch", "{jobs_notoml.toml}"], "has no [[job]] tables", 2),
    ("batch line not an object", ["batch", "-q", "{jobs_list.jsonl}"], "not a JSON object", 1),
    ("batch unknown key", ["batch", "-q", "{jobs_unknown.jsonl}"], "unknown job key 'sped'", 1),
    ("batch job without out", ["batch", "-q", "{jobs_noout.jsonl}"], "has no 'out'", 1),
    ("batch existing output", ["batch", "-q", "{jobs_exists.jsonl}"], "already exists", 1),
    ("batch output is the reference", ["batch", "-q", "--overwrite", "{jobs_self.jsonl}"], "is also an input", 1),
    ("batch NaN seconds", ["batch", "-q", "{jobs_nan.jsonl}"], "seconds=nan", 1),
    ("batch settings not a table", ["batch", "-q", "{jobs_settings.jsonl}"], "give a table of StreamConfig", 1),
    ("batch window 100000", ["batch", "-q", "{jobs_window.jsonl}"], "window_len=100000", 1),
    ("batch seed a word", ["batch", "-q", "{jobs_seed.jsonl}"], "seed='five'", 1),
    ("batch workers 0", ["batch", "--workers", "0", "{jobs_noout.jsonl}"], "workers=0", 2),
    # convert and inspect
    ("convert missing input", ["convert", "{dir}/nope.pt", "{out_st}"], "nope.pt", 2),
    ("convert text input", ["convert", "{notes.txt}", "{out_st}"], "is neither a safetensors file nor", 2),
    ("convert pickled input", ["convert", "{pickled.pth}", "{out_st}"], "holds pickled Python objects", 2),
    ("convert existing output", ["convert", "{model.safetensors}", "{vae.safetensors}"], "already exists", 2),
    ("convert output is the input", ["convert", "{model.safetensors}", "{model.safetensors}", "--overwrite"],
     "is also an input", 2),
    ("convert output .pt", ["convert", "{model.safetensors}", "{dir}/x.pt"], "must end in one of", 2),
    ("convert output folder missing", ["convert", "{model.safetensors}", "{dir}/no/x.safetensors"],
     "does not exist; create it first", 2),
    ("convert dtype fp8", ["convert", "{model.safetensors}", "{out_st}", "--dtype", "fp8"], "invalid choice", 2),
    ("inspect missing", ["inspect", "{dir}/nope.safetensors"], "nope.safetensors", 2),
    ("inspect empty file", ["inspect", "{empty.bin}"], "is neither a safetensors file nor", 2),
    ("inspect binary", ["inspect", "{binary.bin}"], "is neither a safetensors file nor", 2),
    ("inspect pickled", ["inspect", "{pickled.pth}"], "holds pickled Python objects", 2),
    ("inspect truncated", ["inspect", "{trunc.safetensors}"], "trunc.safetensors", 2),
    ("inspect folder", ["inspect", "{dir}"], "inputs", 2),
    ("no command", [], "the following arguments are required: COMMAND", 2),
    ("unknown command", ["paint"], "invalid choice: 'paint'", 2),
]


def fill(arg: str, paths: dict[str, str]) -> str:
    """'{ref.png}/x' -> the input's path (plain substitution: names hold dots)."""
    return re.sub(r"\{([^{}]+)\}", lambda m: paths[m.group(1)], arg)


def snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code)




@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, inputs, tmp_path, capsys):
    _, argv, fragment, status = case
    paths = {**inputs, "out": str(tmp_path / "out.mp4"), "out_ü": str(tmp_path / "vidéo_ü.mp4"),
             "out_st": str(tmp_path / "out.safetensors")}
    argv = [fill(arg, paths) for arg in argv]
    before = snapshot(Path(inputs["dir"]), tmp_path)
    got = run(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert got == status, (got, err)
    assert fragment in (out + err), err
    after = snapshot(Path(inputs["dir"]), tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # every file there before is unchanged
    if status != 0:
        assert after.keys() == before.keys(), sorted(after.keys() - before.keys())  # and nothing new was written
        lines = [line for line in err.splitlines() if line.startswith("error:") or "error:" in line]
        assert len(lines) <= 1 or got == 1  # one line per failure (a batch table lists each job once)


def test_the_catalogue_is_large():
    assert len(CASES) + len(API_CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


def test_odd_images_read_as_a_viewer_shows_them(inputs):
    from knot_core.render_session import read_image

    shapes = {name: tuple(read_image(Path(inputs[name])).shape) for name in
              ("gray.png", "rgba.png", "deep.png", "cmyk.tif", "rotated.jpg", "anim.gif", "portrait_ü_写真.png")}
    assert shapes["rotated.jpg"] == (1, 80, 64, 3)  # EXIF orientation 6 applied: the 80x64 photo stands upright
    assert shapes["cmyk.tif"] == (1, 64, 64, 3) and shapes["gray.png"] == shapes["deep.png"] == (1, 64, 80, 3)
    deep, plain = read_image(Path(inputs["deep.png"])), read_image(Path(inputs["ref.png"]))
    assert float((deep - plain).abs().max()) <= 1 / 255  # 16 bits scaled to the same picture


def test_a_non_finite_image_tensor_is_refused():
    from knot_core.errors import InputError
    from knot_core.image import prepare_reference

    image = torch.rand(1, 64, 64, 3)
    image[0, 3, 4, 1] = float("nan")  # what a broken upstream node may hand the Encode Reference node
    with pytest.raises(InputError, match="NaN or infinite pixel values"):
        prepare_reference(image, 32, 32)


API_CASES = [  # (id, RenderJob changes, message fragment): the Python API refuses as the CLI does
    ("seconds inf", {"frames": None, "seconds": float("inf")}, "seconds=inf"),
    ("seconds as text", {"frames": None, "seconds": "5"}, "seconds='5'"),
    ("frames 1.5", {"frames": 1.5}, "frames=1.5"),
    ("fps 0", {"fps": 0}, "fps=0"),
    ("seed -1", {"seed": -1}, "seed=-1"),
    ("crf 52", {"crf": 52}, "crf=52"),
    ("width not a multiple of 16", {"width": 33, "height": 32}, "width=33"),
    ("device banana", {"device": "banana"}, "device='banana'"),
    ("unknown setting", {"settings": {"chunk_size": 3}}, "unknown setting(s) ['chunk_size']"),
    ("NaN shift", {"settings": {"shift": float("nan")}}, "shift=nan"),
    ("huge window", {"settings": {"window_len": 100000}}, "window_len=100000"),
    ("bool as a number", {"settings": {"chunk_len": True}}, "chunk_len=True"),
    ("fit unknown", {"fit": "zoom"}, "fit='zoom'"),
    ("end policy unknown", {"end_policy": "loop"}, "end_policy='loop'"),
    ("output is the reference", {"out": "{ref.png}", "overwrite": True}, "is also an input"),
    ("output exists", {"out": "{existing.mp4}"}, "already exists"),
    ("missing model", {"model": "{dir}/nope.safetensors"}, "does not exist"),
    ("pickled vae", {"vae": "{pickled.pth}"}, "holds pickled Python objects"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_api_input(case, inputs, tmp_path):
    from knot_core.api import RenderJob, render
    from knot_core.errors import KnotError

    _, changes, fragment = case
    fields = {"reference": inputs["ref.png"], "model": inputs["model.safetensors"], "vae": inputs["vae.safetensors"],
              "out": str(tmp_path / "o.mp4"), "frames": 9}
    fields |= {k: fill(v, inputs) if isinstance(v, str) and "{" in v else v for k, v in changes.items()}
    before = snapshot(Path(inputs["dir"]), tmp_path)
    with pytest.raises(KnotError) as err:
        render(RenderJob(**fields))
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert snapshot(Path(inputs["dir"]), tmp_path) == before


# --- a stopped or starved render: a subprocess each -------------------------------------------------------------

def render_process(inputs, out: Path, *extra: str, **popen) -> subprocess.Popen:
    argv = [fill(arg, {**inputs, "out": str(out)}) for arg in render("--crf", "0", *extra, frames="400")]
    return subprocess.Popen([sys.executable, "-m", "knot_core", *argv], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_for_frames(out: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (out.is_file() and out.stat().st_size > 0) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_a_signal_mid_render_leaves_a_playable_file(inputs, tmp_path, signum, status):
    out = tmp_path / "stopped.mp4"
    child = render_process(inputs, out)
    wait_for_frames(out, child)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == status and "Traceback" not in err
    frames = count_frames(out)  # playable: every chunk written before the signal
    assert 0 < frames < 400 and (frames - 9) % 12 == 0
    if signum != signal.SIGKILL:
        assert f"holds {frames} frames" in err and state_path(out).is_file()


def test_a_full_disk_is_one_line_and_keeps_the_written_frames(inputs, tmp_path):
    out = tmp_path / "full.mp4"

    def small_disk() -> None:  # files may not grow past 20 kB: writing past it fails as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    child = render_process(inputs, out, preexec_fn=small_disk)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "holds the first" in errors[0] and "is playable" in errors[0], err
    assert count_frames(out) > 0  # the frames written before the disk filled stay playable
