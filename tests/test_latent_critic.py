"""train/train_demo.py --adversarial: a latent critic beside the x0 regression (tried, not in the recipe). The
critic tells detailed latents from blurred ones; its term reaches the DiT only after --critic-warmup, and a run
whose critic never reaches it trains the DiT bit for bit as a run without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from knot_core.demo import DEMO_CODEC

TRAIN = Path(__file__).resolve().parents[1] / "train"
sys.path.insert(0, str(TRAIN))

from latent_critic import LatentCritic, critic_loss, generator_loss  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRAIN), str(TRAIN.parent)])}


def _blur(x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    flat = x.transpose(1, 2).reshape(b * t, c, h, w)
    soft = F.avg_pool2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return soft.reshape(b, t, c, h, w).transpose(1, 2)


def test_the_critic_learns_to_tell_blurred_latents_from_detailed_ones():
    torch.manual_seed(0)
    critic = LatentCritic(width=32)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.99))
    reference = torch.randn(4, 16, 1, 12, 12)
    first = None
    for _ in range(60):
        real = torch.randn(4, 16, 3, 12, 12)
        loss = critic_loss(critic, real, _blur(real), reference)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    real = torch.randn(4, 16, 3, 12, 12)
    with torch.no_grad():
        assert critic(real, reference).shape == (12, 1, 6, 6)  # patch logits per frame
        assert critic(real, reference).mean() > critic(_blur(real), reference).mean() + 1.0
        assert critic_loss(critic, real, _blur(real), reference) < 0.5 < 1.9 < first  # 2: a critic that cannot tell
    fake = _blur(real).requires_grad_()
    generator_loss(critic, fake, reference).backward()
    detail = (fake - _blur(fake)).detach()  # what the blur took away, per cell: the term's step restores it
    assert float((-fake.grad * detail).sum()) > 0


def _train(tmp_path: Path, name: str, *extra: str) -> dict[str, torch.Tensor]:
    out = tmp_path / name
    run = subprocess.run([sys.executable, str(TRAIN / "train_demo.py"), "--codec", str(DEMO_CODEC), "--out", str(out),
                          "--size", "64", "--width", "64", "--layers", "2", "--clips", "2", "--steps", "2",
                          "--batch", "1", "--teacher-steps", "0", "--cache", str(tmp_path / "c.npz"), *extra],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr
    return load_file(out / "demo.safetensors")


def test_the_adversarial_term_reaches_the_dit_only_after_the_critic_warmup(tmp_path):
    plain = _train(tmp_path, "plain")
    warming = _train(tmp_path, "warming", "--adversarial", "0.5", "--critic-warmup", "2")
    adversarial = _train(tmp_path, "adversarial", "--adversarial", "0.5", "--critic-warmup", "0")
    assert plain.keys() == warming.keys() == adversarial.keys()
    assert all(torch.equal(plain[k], warming[k]) for k in plain)
    changed = max(float((plain[k].float() - adversarial[k].float()).abs().max()) for k in plain)
    assert changed > 1e-6
