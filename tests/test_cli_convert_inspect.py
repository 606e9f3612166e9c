"""`python -m knot_core convert` writes our format from a foreign checkpoint (weights identical to a direct
load), and `inspect` prints format, architecture, LoRA state, parameter count, dtype and sampler defaults,
or one `error:` line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from test_checkpoints import TINY, lora_weights, peft_lora_dict, run, sd, tiny_model

from knot_core.checkpoints import load_dit
from knot_core.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--num-heads", "2", "--text-len", "8"]


def write_longlive(tmp_path: Path) -> tuple[Path, Path]:
    m = tiny_model()
    torch.save({"generator": {f"model.{k}": v for k, v in sd(m).items()}}, tmp_path / "base.pt")
    torch.save(peft_lora_dict(lora_weights(m.cfg, 4, 3)), tmp_path / "lora.pt")
    return tmp_path / "base.pt", tmp_path / "lora.pt"


def test_convert_longlive_to_fp16_equals_direct_load(tmp_path, capsys):
    base, lora = write_longlive(tmp_path)
    out = tmp_path / "knot.safetensors"
    assert main(["convert", str(base), str(out), "--dtype", "fp16", "--lora", str(lora), *TINY_FLAGS]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    direct, _ = load_dit(base, dtype=torch.float16, lora=lora, **TINY)
    ours, info = load_dit(out, dtype=torch.float16)
    assert (info.format, info.lora_merged, info.sampler.stream.strategy) == ("knot", True, "longlive")
    assert all(torch.equal(a, b) for a, b in zip(sd(ours).values(), sd(direct).values(), strict=True))
    assert {p.dtype for p in ours.parameters()} == {torch.float16}
    assert torch.equal(run(ours), run(direct))


def test_inspect_prints_the_model(tmp_path, capsys):
    base, lora = write_longlive(tmp_path)
    out = tmp_path / "knot.safetensors"
    main(["convert", str(base), str(out), "--dtype", "bf16", "--lora", str(lora), *TINY_FLAGS])
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["format"].strip() == ("knot: Knot Forcing model file (safetensors with knot_forcing metadata), "
                                       "converted from longlive")
    assert lines["architecture"].strip() == ("dim 64, layers 2, heads 2 (head_dim 32), ffn_dim 128, freq_dim 32, "
                                             "out_dim 16, patch 1x2x2")
    assert lines["conditioning"].strip() == "in_dim 16, layout noise [noisy 16] (T2V)"
    assert lines["lora"].strip() == "merged (scale alpha/r = 1)"
    assert lines["parameters"].strip() == "147,200 (0.15 M)"
    assert lines["dtype"].strip() == "bfloat16"
    # LongLive's published local_attn_size 12 = sink 3 + window 6 + chunk 3, the default model's absolute sink
    assert lines["sampler"].strip().startswith("strategy longlive, chunk_len 3, knot_len 0, window_len 6, sink_len 3, "
                                               "sink_positions absolute, steps 1000,750,500,250, shift 5")
    assert main(["inspect", str(base), "--num-heads", "2"]) == 0
    text = capsys.readouterr().out
    assert "format:       forcing_pt:" in text and "lora:         none" in text and "dtype:        float32" in text


def test_inspect_bad_file_is_one_error_line(tmp_path, capsys):
    save_file({"decoder.middle.0.residual.0.gamma": torch.zeros(4, 1, 1, 1)}, tmp_path / "vae.safetensors")
    assert main(["inspect", str(tmp_path / "vae.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this file is a Wan VAE") and "\n" not in err


def test_parser_has_one_function_per_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"convert", "inspect"} <= set(sub.choices)
    args = parser.parse_args(["convert", "a.pt", "b.safetensors"])
    assert args.dtype == "bf16" and args.run.__name__ == "run_convert"


def test_module_entry_point(tmp_path):
    missing = tmp_path / "absent.safetensors"
    proc = subprocess.run([sys.executable, "-m", "knot_core", "inspect", str(missing)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "models/knot_forcing/" in proc.stderr and str(missing) in proc.stderr


DEMO_MODEL = ROOT / "knot_core" / "models" / "demo.safetensors"


def test_inspect_into_a_closed_pipe_stops_quietly():
    # `inspect ... | head -1`: the reader is gone before the write; no BrokenPipeError traceback, exit 141
    proc = subprocess.Popen([sys.executable, "-m", "knot_core", "inspect", str(DEMO_MODEL)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_the_shipped_demo_model_has_its_adapters_attached(capsys):
    assert main(["inspect", str(DEMO_MODEL)]) == 0
    out = capsys.readouterr().out
    assert "driving:      motion (motion_cross_attention)\n" in out
    assert "not installed" not in out
    _, info = load_dit(DEMO_MODEL, dtype="fp32")
    assert [(a.name, a.attached) for a in info.adapters] == [("motion", True)]  # driving only through cross-attention
