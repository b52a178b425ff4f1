"""EDM (Karras et al. 2022) as DIAMOND uses it: preconditioning, log-normal training noise levels, the weighted
denoising loss, and a few-step Euler / Heun sampler on the Karras sigma schedule.

Written here rather than taken from diffusers' schedulers because: training needs per-sample sigmas, the
log-normal sampler and EDM's loss weighting, which no diffusers scheduler provides; `EDMEulerScheduler` is a
stateful object (one sigma for the whole batch, a step index that must be reset for every sample, a warning if
`scale_model_input` is skipped) and has no EDM Heun step (`HeunDiscreteScheduler` discretises DDPM time); its
`"epsilon"` output path is in fact EDM's `c_skip * x + c_out * F` (a test checks our Euler sampler against it
step for step). A pure function of (network, noise) keeps sampling deterministic given the noise, batched over
any leading shape and differentiable for gradient planners.

The network `net(x_in (B, C, H, W), c_noise (B,)) -> F (B, C, H, W)` sees `c_in * x`; the denoiser is
`D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (c_in * x (B, C, H, W), c_noise (B,)) -> F


@dataclass(frozen=True)
class EDM:
    sigma_data: float = 0.5  # std of the (scaled to [-1, 1]) frames, as in DIAMOND
    p_mean: float = -0.4  # training log-sigma ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    sigma_min: float = 2e-3  # sampling schedule (DIAMOND: 5 -> 2e-3, rho 7)
    sigma_max: float = 5.0
    rho: float = 7.0

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`sigma (B,)` -> `(c_skip, c_out, c_in, c_noise)`, each `(B,)`."""
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's lambda(sigma) = 1 / c_out^2: makes the loss on `F` unit-weighted at every noise level."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def training_sigmas(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Log-normal noise levels `(n,)`."""
        return (torch.randn(n, device=device, generator=generator) * self.p_std + self.p_mean).exp()

    def denoise(self, net: Net, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """`D(x, sigma)`: `x (B, C, H, W)` noisy, `sigma (B,)` -> denoised `(B, C, H, W)`."""
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in self.scalings(sigma))
        return c_skip * x + c_out * net(c_in * x, c_noise.flatten())

    def loss(self, net: Net, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor | None = None):
        """Weighted denoising loss per sample `(B,)` and the denoised estimate `(B, C, H, W)`.

        `lambda(sigma) * |D(x0 + sigma n) - x0|^2` equals `|F - (x0 - c_skip x) / c_out|^2`, computed in that form.
        """
        noise = torch.randn_like(x0) if noise is None else noise
        x = x0 + sigma.view(-1, 1, 1, 1) * noise
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in self.scalings(sigma))
        out = net(c_in * x, c_noise.flatten())
        target = (x0 - c_skip * x) / c_out
        denoised = c_skip * x + c_out * out
        return ((out - target) ** 2).flatten(1).mean(1), denoised

    def sigmas(self, steps: int, device=None) -> torch.Tensor:
        """Karras schedule `(steps + 1,)`: `steps` levels from sigma_max down to sigma_min, then 0."""
        ramp = torch.linspace(0, 1, steps, device=device, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        levels = (hi + ramp * (lo - hi)) ** self.rho if steps > 1 else torch.full((1,), self.sigma_max)
        return torch.cat([levels.to(device), torch.zeros(1, device=device, dtype=torch.float64)]).float()

    def sample(self, net: Net, noise: torch.Tensor, steps: int = 3, method: str = "euler") -> torch.Tensor:
        """Solve the probability-flow ODE from `x = sigma_max * noise` (`(B, C, H, W)`, unit normal) to sigma 0.

        Euler: one network call per step (DIAMOND's default, 3 steps); Heun: a second call on the steps that end
        above sigma_min; the steps to sigma_min and to 0 stay Euler, because there (x - D) / sigma divides a
        sample's model error, far larger than sigma_min, by sigma_min (a Heun correction at sigma_min dropped
        PointMaze PSNR from 38 to 23 dB). Deterministic given `noise`; differentiable w.r.t. whatever `net`
        closes over.
        """
        if method not in ("euler", "heun"):
            raise ValueError(f"unknown EDM sampler {method!r}; use euler or heun")
        sigmas = self.sigmas(steps, noise.device)
        x = noise * sigmas[0]
        ones = torch.ones(len(x), device=x.device)
        for i in range(steps):
            sigma, nxt = sigmas[i], sigmas[i + 1]
            d = (x - self.denoise(net, x, sigma * ones)) / sigma
            x_next = x + (nxt - sigma) * d
            if method == "heun" and i < steps - 2:
                d2 = (x_next - self.denoise(net, x_next, nxt * ones)) / nxt
                x_next = x + (nxt - sigma) * (d + d2) / 2
            x = x_next
        return x
