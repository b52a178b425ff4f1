"""SIGReg (LeWM): keep end-to-end embeddings from collapsing by testing them against an isotropic Gaussian.

Embeddings are projected onto random unit directions; along each, the Epps–Pulley statistic compares the
empirical characteristic function with that of N(0, 1), integrated under a Gaussian window. A collapsed or
anisotropic embedding scores high; N(0, I) scores ~0. Loss = mean statistic over directions.
"""

from __future__ import annotations

import torch


def sigreg(z: torch.Tensor, num_proj: int = 1024, num_points: int = 17, generator: torch.Generator | None = None):
    """SIGReg loss of embeddings `z (M, D)` (M samples). Returns a scalar; ~0 for z ~ N(0, I).

    Fresh random directions each call (as LeWM does) unless a seeded `generator` is given.
    """
    m, d = z.shape
    directions = torch.randn(d, num_proj, device=z.device, dtype=z.dtype, generator=generator)
    directions = directions / directions.norm(dim=0, keepdim=True)
    proj = z @ directions  # (M, P)
    t = torch.linspace(0.0, 3.0, num_points, device=z.device, dtype=z.dtype)  # symmetric: integrate t >= 0
    xt = proj.unsqueeze(-1) * t  # (M, P, T)
    gauss = torch.exp(-0.5 * t**2)
    err = (xt.cos().mean(0) - gauss) ** 2 + xt.sin().mean(0) ** 2  # (P, T) squared ECF distance
    stat = torch.trapezoid(err * gauss, t, dim=-1) * m  # Epps–Pulley statistic scales with sample count
    return stat.mean()
