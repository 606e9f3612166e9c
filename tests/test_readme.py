"""Every code block of README.md runs as written, each in its own empty temporary folder.

The rules (explicit, so a block that stops working fails here instead of being skipped quietly):
- The package counts as installed (`pip install -e .`, the README's set-up): PYTHONPATH points at this
  checkout, and a command starting with `knot-forcing` runs as `python -m knot_core` (pyproject's script
  entry is `knot_core.cli:main`, which `__main__` runs; checked below).
- Files a block names (NAMED_FILES: me.png, knot.safetensors, wan_2.1_vae.safetensors, speech.wav, ...)
  are made in the folder first as tiny real files of that kind (a 64x64 photo, a 2-layer Knot Forcing
  model at 32x32 / 16 fps, a tiny Wan2.1 VAE, 2 s of 16 kHz speech-like tone, a Self Forcing-style .pt).
- `bash` blocks run line by line (backslash continuations joined, `#` comments dropped), each `&&` part as
  one command. Skipped by rule, and only these: package installs (`pip install`, `comfy node install`,
  `cd ComfyUI/custom_nodes && git clone`: they need the network, CI's set-up does them), the test suite
  itself (`python -m pytest`) and benchmarks (`python bench/...`, `bash bench/...`: minutes each; they
  print figures and are run by hand).
- `python` blocks run as a script. `json` blocks are the batch section's jobs file: written as
  jobs.jsonl and run with `python -m knot_core batch jobs.jsonl`, as the text above the block says.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from knot_core.config import PRESETS, DiTConfig, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.model_file import SamplerDefaults, save_knot_model
from knot_core.vae import VAEConfig, WanVAE

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = (re.compile(r"^pip install "), re.compile(r"^comfy node install"), re.compile(r"^cd ComfyUI/custom_nodes"),
        re.compile(r"^git clone"), re.compile(r"^python -m pytest"), re.compile(r"^(python|bash) bench/"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def photo(path: Path) -> None:
    cv2.imwrite(str(path), (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))


def knot_model(path: Path) -> None:
    torch.manual_seed(0)
    sampler = SamplerDefaults(StreamConfig(steps=(1000, 500)), fps=16, resolution=(32, 32))
    save_knot_model(KnotDiT(PRESETS["tiny-noise-ref-mask"]), path, sampler=sampler)


def wan_vae(path: Path) -> None:
    save_file(WanVAE(VAEConfig.tiny()).state_dict(), str(path))


def speech(path: Path, seconds: float = 2.0, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))  # syllable-rate envelope
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((tone * 32767).astype("<i2").tobytes())


def self_forcing_pt(path: Path) -> None:
    # one head of 128 (what `inspect` assumes for files that do not store heads: dim / 128, as every Wan2.1)
    cfg = DiTConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=1, freq_dim=32, text_dim=32)
    weights = {f"model.{k}": v for k, v in KnotDiT(cfg).state_dict().items()}
    torch.save({"generator_ema": weights}, path)


NAMED_FILES = {"me.png": photo, "you.png": photo, "knot.safetensors": knot_model, "wan_2.1_vae.safetensors": wan_vae,
               "speech.wav": speech, "a.wav": speech, "self_forcing_dmd.pt": self_forcing_pt}


def blocks() -> list[tuple[str, int, str]]:
    """(language, line number, text) of every fenced block in the README."""
    found, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        start = re.match(r"^```(\w+)\s*$", lines[i])
        if start:
            j = lines.index("```", i + 1)
            found.append((start.group(1), i + 1, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return found


def commands(text: str) -> list[str]:
    """The commands of a bash block: continuations joined, comments dropped, split at &&."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out += [part.strip() for part in line.split("&&")]
    return out


def run_in(folder: Path, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=folder, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


def prepare(folder: Path, text: str) -> None:
    for name, make in NAMED_FILES.items():
        if re.search(rf"(?<![\w.]){re.escape(name)}\b", text):
            make(folder / name)


def test_the_readme_has_the_blocks_this_test_knows():
    kinds = [kind for kind, _, _ in blocks()]
    assert kinds.count("python") == 4 and kinds.count("json") == 1 and kinds.count("bash") >= 4, kinds
    assert set(kinds) <= {"python", "bash", "json"}, kinds


def test_the_installed_command_is_the_module_entry():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'knot-forcing = "knot_core.cli:main"' in text
    assert "main()" in (ROOT / "knot_core" / "__main__.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind,line,text", blocks(), ids=[f"{k}-line{n}" for k, n, _ in blocks()])
def test_readme_block_runs_as_written(kind, line, text, tmp_path):
    prepare(tmp_path, text + (" knot.safetensors wan_2.1_vae.safetensors" if kind == "json" else ""))
    if kind == "python":
        done = run_in(tmp_path, [sys.executable, "-c", text])
        assert done.returncode == 0, f"README line {line}:\n{done.stderr[-3000:]}"
        return
    if kind == "json":
        (tmp_path / "jobs.jsonl").write_text(text + "\n", encoding="utf-8")
        done = run_in(tmp_path, [sys.executable, "-m", "knot_core", "batch", "jobs.jsonl", "-q"])
        assert done.returncode == 0, f"README line {line}:\n{done.stdout}\n{done.stderr[-3000:]}"
        assert done.stdout.strip().splitlines()[-1].endswith("done"), done.stdout
        return
    ran = 0
    for command in commands(text):
        if any(rule.search(command) for rule in SKIP):
            continue
        args = shlex.split(command)
        if args[0] == "knot-forcing":
            args = [sys.executable, "-m", "knot_core", *args[1:]]
        elif args[:3] == ["python", "-m", "knot_core"]:
            args = [sys.executable, *args[1:]]
        done = run_in(tmp_path, args)
        assert done.returncode == 0, f"README line {line}: {command}\n{done.stderr[-3000:]}"
        ran += 1
    if ran == 0:
        pytest.skip(f"README line {line}: every command is an install, the suite itself or a benchmark (rules above)")
