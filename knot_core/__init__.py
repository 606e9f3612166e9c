"""Knot Forcing: streaming, unbounded-length portrait animation on a causal Wan2.1 DiT.

Pure PyTorch; never imports ComfyUI. Paper: Knot Forcing, arXiv 2512.21734.
"""

__version__ = "0.1.0"
