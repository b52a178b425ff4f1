"""Numbers every report uses: image metrics (PSNR, SSIM), success-rate intervals, latency percentiles,
success-classifier accuracy and rank correlation (imagined vs real success of policies)."""

from __future__ import annotations

import math

import numpy as np
import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [0, 1]: `(B, ..., H, W, 3)` -> `(B,)`."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-sample SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, mean over channels and
    valid positions) of images in [0, 1]: `(B, H, W, 3)` -> `(B,)`."""
    x, y = (t.movedim(-1, 1).float() for t in (a, b))  # (B, 3, H, W)
    g = torch.exp(-((torch.arange(window, dtype=torch.float32) - (window - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, window, window).to(x.device)
    blur = lambda t: torch.nn.functional.conv2d(t, kernel, groups=x.shape[1])  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.flatten(1).mean(1)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(success: np.ndarray) -> dict:
    """`{"rate", "95ci" (Wilson), "n"}` of a boolean success array."""
    lo, hi = wilson_interval(int(np.sum(success)), len(success))
    return {"rate": float(np.mean(success)), "95ci": [round(lo, 3), round(hi, 3)], "n": len(success)}


def percentiles(values, scale: float = 1.0, digits: int | None = None) -> dict:
    """`{"p50", "p95", "n"}` of `values` times `scale` (e.g. 1000 for seconds -> ms), rounded to `digits`;
    p50/p95 are None when there are no values."""
    v = np.asarray(values, np.float64) * scale
    if not len(v):
        return {"p50": None, "p95": None, "n": 0}
    p50, p95 = float(np.percentile(v, 50)), float(np.percentile(v, 95))
    if digits is not None:
        p50, p95 = round(p50, digits), round(p95, digits)
    return {"p50": p50, "p95": p95, "n": len(v)}


def ranks(values) -> np.ndarray:
    """Ranks 1..n of `values (n,)`, ties given their average rank (as Spearman's correlation takes them)."""
    v = np.asarray(values, np.float64)
    order = np.argsort(v, kind="stable")
    out = np.empty(len(v))
    out[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        out[tied] = out[tied].mean()
    return out


def correlations(x, y) -> dict:
    """`{"pearson", "spearman", "n"}` of two samples `(n,)`; a coefficient is None where a sample is constant (or
    n < 3: no ranking to speak of)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def pearson(a, b):
        if len(a) < 3 or a.min() == a.max() or b.min() == b.max():
            return None
        return round(float(np.corrcoef(a, b)[0, 1]), 4)

    return {"pearson": pearson(x, y), "spearman": pearson(ranks(x), ranks(y)), "n": len(x)}


def success_report(counts: dict) -> dict:
    """Accuracy, balanced accuracy and the majority-class baseline from `{name: (2, 2) [label, guess] counts}`."""
    out = {}
    for name, c in counts.items():
        total = float(c.sum())
        recall = [float(c[i, i] / c[i].sum()) if c[i].sum() > 0 else float("nan") for i in (0, 1)]
        out[name] = {
            "frames": int(total),
            "accuracy": round(float(c.trace()) / total, 4),
            "balanced_accuracy": round(float(np.nanmean(recall)), 4),
            "positive_rate": round(float(c[1].sum()) / total, 4),
            "majority_baseline": round(max(float(c[0].sum()), float(c[1].sum())) / total, 4),
        }
    return out
