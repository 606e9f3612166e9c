"""The one source of randomness of a stream (initial noise and re-noise).

A seeded `torch.Generator` by default, drawn on the CPU so a seed gives the same video
on every device; tests and parity checks can subclass it to supply exact tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


class NoiseSource:
    def __init__(self, seed: int):
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(seed))

    def draw(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
        return torch.randn(shape, generator=self.generator, dtype=torch.float32).to(device)

    def get_state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)
