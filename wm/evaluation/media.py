"""What people look at after an evaluation: side-by-side videos (real | imagined | goal) and the two-panel
summary plot (outcomes and latency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm.video import side_by_side, upscale, write_mp4


def write_episode_videos(out: Path, real: np.ndarray, imagined: np.ndarray | None, goals: list[np.ndarray]) -> None:
    """`out/episode_<i>.mp4` for each goal: `real (n, T, H, W, 3)` | `imagined (n, T, H, W, 3)` (if any) | the goal
    image held still, upscaled 4x."""
    for i, goal in enumerate(goals):
        columns = [real[i]] + ([imagined[i]] if imagined is not None else [])
        columns.append(np.repeat(goal[None], len(real[i]), axis=0))
        write_mp4(out / f"episode_{i}.mp4", upscale(side_by_side(columns), 4), fps=10)


def summary_figure(path: Path, outcomes, latencies_ms, period_ms: float | None = None, latency_label: str = ""):
    """A two-panel PNG: success per outcome (left) and a latency histogram (right).

    `outcomes` is `{label: (values (n,) bool, colour)}`: one series is drawn as success/failure counts, several as
    per-episode bars side by side (e.g. judged and ground truth) up to 20 episodes, as success rates beyond;
    `period_ms` marks a control period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    series = list(outcomes.items())
    if len(series) == 1:
        label, (values, _) = series[0]
        values = np.asarray(values, bool)
        ax1.bar(["success", "failure"], [int(values.sum()), int((~values).sum())], color=["tab:green", "tab:red"])
        ax1.set_title(f"{label} {values.mean():.0%} of {len(values)}")
    elif len(series[0][1][0]) > 20:
        rates = [float(np.mean(values)) for _, (values, _) in series]
        ax1.bar([label for label, _ in series], rates, color=[colour for _, (_, colour) in series])
        ax1.set_ylim(0, 1)
        ax1.set_title(f"success rate of {len(series[0][1][0])} episodes")
    else:
        width = 0.8 / len(series)
        for k, (label, (values, colour)) in enumerate(series):
            idx = np.arange(len(values))
            ax1.bar(idx + (k - (len(series) - 1) / 2) * width, np.asarray(values, float), width, label=label,
                    color=colour)  # fmt: skip
        ax1.set_xticks(np.arange(len(series[0][1][0])))
        ax1.set_xlabel("episode")
        ax1.set_yticks([0, 1], ["fail", "success"])
        ax1.legend(fontsize=8)
    latencies_ms = np.asarray(latencies_ms, np.float64)
    ax2.hist(latencies_ms, bins=30 if period_ms is not None else 20, color="tab:blue")
    if period_ms is not None:
        ax2.axvline(period_ms, color="tab:red", linestyle="--", label=f"period {period_ms:.0f} ms")
        ax2.legend(fontsize=8)
    else:
        ax2.set_title(f"p50 {np.percentile(latencies_ms, 50):.0f} ms" if len(latencies_ms) else "no replans")
    ax2.set_xlabel(latency_label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
