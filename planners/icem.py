"""iCEM (Pinneri et al. 2020): CEM with coloured noise, a shrinking population and elites that are kept.

Differences from `CEM` (same Gaussian over (B, H, A), same bounds and best-ever tracking):
- noise is coloured along the horizon, power spectrum ~ 1/f^beta (beta 0 = white, 2.5 = smooth), unit variance;
- iteration i draws max(samples * decay^-i, 2 * elites) samples;
- the `keep_fraction` best elites of an iteration join the next iteration's population, and those of the last
  iteration are kept on the planner: `shift` advances them with the solution, and the next `plan` with a warm
  start evaluates them in its first iteration (a plan without warm start starts afresh);
- the mean is evaluated in the last iteration (and the warm start in the first);
- mean/std move toward the elites' statistics with momentum: new = momentum * old + (1 - momentum) * elites'.
Population sizes vary, so cost_fn sees (B, S_i, H, A) with a different S_i per iteration, once per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from planners.base import PlannerBase, select
from wm.errors import WMError


def colored_filter(horizon: int, beta: float, device: str = "cpu") -> Tensor:
    """(H // 2 + 1,) rfft gains f^(-beta/2) scaled so that filtered unit white noise keeps unit variance."""
    freqs = torch.fft.fftfreq(horizon, device=device).abs()  # full spectrum, symmetric
    freqs[0] = 1.0 / horizon  # the DC gain equals the lowest frequency's, as in the `colorednoise` package
    gains = freqs ** (-beta / 2)
    return gains[: horizon // 2 + 1] / gains.pow(2).mean().sqrt()  # Var(irfft(g * rfft(w))) = mean(g_full^2)


def colored_noise(shape: tuple[int, int, int, int], gains: Tensor, generator: torch.Generator) -> Tensor:
    """(B, S, H, A) Gaussian noise, coloured along H by `colored_filter` gains, unit variance per entry."""
    b, s, h, a = shape
    white = torch.randn((b, s, a, h), generator=generator, device=gains.device)
    return torch.fft.irfft(torch.fft.rfft(white) * gains, n=h).transpose(2, 3)


@dataclass(eq=False)
class ICEM(PlannerBase):
    samples: int = 300
    elites: int = 30
    iterations: int = 10
    beta: float = 2.5
    decay: float = 1.25
    keep_fraction: float = 0.3
    momentum: float = 0.1
    init_std: float = 1.0
    min_std: float = 1e-3

    GUIDED: ClassVar[bool] = True
    BUDGET: ClassVar[dict[str, str]] = {"samples": "samples", "elites": "elites", "iterations": "iterations"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.elites <= self.samples or self.iterations < 1 or self.decay < 1:
            raise WMError("iCEM needs 1 <= elites <= samples, iterations >= 1 and decay >= 1: fix the planner config")
        self.kept_elites: Tensor | None = None  # (B, K, H, A) from the last plan, advanced by `shift`

    def shift(self, solution: Tensor) -> Tensor:
        """Warm start for the next MPC step (see `PlannerBase.shift`); also advances the kept elites by one step."""
        if self.kept_elites is not None:
            self.kept_elites = super().shift(self.kept_elites.flatten(0, 1)).unflatten(0, self.kept_elites.shape[:2])
        return super().shift(solution)

    def begin(self, start: Tensor, warm: bool) -> dict:
        kept = start.new_zeros((start.shape[0], 0, *start.shape[1:]))  # (B, K, H, A) elites carried over: none yet
        if warm and self.kept_elites is not None and self.kept_elites.shape[0] == start.shape[0]:
            kept = self.kept_elites
        return {
            "mean": start,
            "std": (self.init_std * self.half_range).expand_as(start).clone(),
            "gains": colored_filter(self.horizon, self.beta, self.device),
            "kept": kept,
            "warm": warm,
        }

    def propose(self, search: dict, iteration: int) -> Tensor:
        mean, std = search["mean"], search["std"]  # (B, H, A) each
        num = max(round(self.samples * self.decay**-iteration), 2 * self.elites)
        noise = colored_noise((mean.shape[0], num, *mean.shape[1:]), search["gains"], self.generator)
        last, first_warm = iteration == self.iterations - 1, iteration == 0 and search["warm"]
        extra = [mean[:, None]] if last or first_warm else []
        return self.clip(torch.cat([mean[:, None] + std[:, None] * noise, search["kept"], *extra], dim=1), inplace=True)

    def update(self, search: dict, iteration: int, actions: Tensor, costs: Tensor) -> None:
        elites, _ = select(actions, costs, self.elites)  # (B, E, H, A)
        search["kept"] = elites[:, : max(1, round(self.keep_fraction * self.elites))]
        m = self.momentum
        search["mean"] = m * search["mean"] + (1 - m) * elites.mean(1)
        std = m * search["std"] + (1 - m) * elites.std(1, correction=0)
        search["std"] = std.clamp(min=self.relative(self.min_std))

    def end(self, search: dict) -> None:
        self.kept_elites = search["kept"]
