"""Recording for `wm validate`: the store layout of a validation run, one episode's frames, the latent goal
distance, and the summary plot (the layout is documented in `wm.app.validate`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SECTIONS = ("t_observe", "t_plan", "t_send", "t_step")


def latent_distance(model, obs: dict, goal_obs: dict) -> float:
    """Visual-latent MSE between an observation and the goal (the planners' default objective)."""
    import torch

    with torch.no_grad():
        pair = {k: torch.as_tensor(np.stack([obs[k], goal_obs[k]]))[:, None] for k in ("rgb", "proprio")}
        z = model.encode(pair)[..., : model.spec["visual_dim"]]  # (2, 1, N, Dv)
    return float(((z[0] - z[1]) ** 2).mean())


# -------------------------------------------------------------------------------------------- recording
class EpisodeRecorder:
    """Collects one episode's frames (`add`) and turns them into store arrays (`arrays`)."""

    def __init__(self, keys: dict, chunk: int, action_dim: int):
        self.keys, self.chunk, self.action_dim = keys, chunk, action_dim
        self.rows: list[dict] = []

    def add(self, record, model=None, goal_obs=None, safety: bool = False) -> None:
        plan = np.zeros((self.chunk, self.action_dim), np.float32)
        plan[: min(self.chunk, len(record.chunk))] = record.chunk[: self.chunk]
        row = {
            "action": record.sent,
            "action_requested": record.requested,
            "plan": plan,
            "plan_step": record.chunk_step,
            "new_plan": record.new_plan,
            "late": record.late,
            "safety": safety,
            **{k: getattr(record, k) for k in SECTIONS},
        }
        self._add(record.obs, row, model, goal_obs)

    def add_final(self, obs: dict, model=None, goal_obs=None) -> None:
        """The final frame: no action (zeros), plan_step -1."""
        zeros = np.zeros(self.action_dim, np.float32)
        row = {"action": zeros, "action_requested": zeros, "plan": np.zeros((self.chunk, self.action_dim))}
        self._add(obs, {**row, "plan_step": -1, "new_plan": False, "late": False, "safety": False}, model, goal_obs)

    def _add(self, obs: dict, row: dict, model, goal_obs) -> None:
        row.update(rgb=obs["rgb"], proprio=obs["proprio"])
        if "state" in self.keys:
            row["state"] = obs["sim_state"]
        if "goal_latent_distance" in self.keys:
            row["goal_latent_distance"] = latent_distance(model, obs, goal_obs)
        row["truth"] = bool(obs.get("sim_success", False))
        self.rows.append(row)

    def arrays(self, complete: bool, verdict: bool, goal_state, has_truth: bool) -> dict[str, np.ndarray]:
        n = len(self.rows)
        out = {k: np.stack([np.asarray(r.get(k, 0)) for r in self.rows]) for k in self.keys if k in self.rows[0]}
        for k in SECTIONS:
            out[k] = np.array([r.get(k, 0.0) for r in self.rows], np.float32)
        judged = np.zeros(n, bool)
        judged[-1] = verdict
        out["judged_success"] = judged
        out["success"] = np.array([r["truth"] for r in self.rows]) if has_truth else judged
        out["complete"] = np.full(n, complete)
        if "goal" in self.keys:
            out["goal"] = np.repeat(np.asarray(goal_state, np.float64)[None], n, axis=0)
        return out


def store_keys(robot, chunk: int, with_model: bool, with_goal_states: bool) -> dict:
    obs, action = robot.observation_features, robot.action_features
    a = list(action.shape)
    keys = {
        "rgb": {"shape": list(obs["rgb"].shape), "dtype": "uint8"},
        "proprio": {"shape": list(obs["proprio"].shape), "dtype": "float32"},
        "action": {"shape": a, "dtype": "float32"},
        "action_requested": {"shape": a, "dtype": "float32"},
        "plan": {"shape": [chunk, *a], "dtype": "float32"},
        "plan_step": {"shape": [], "dtype": "int32"},
        "new_plan": {"shape": [], "dtype": "bool"},
        **{k: {"shape": [], "dtype": "float32"} for k in SECTIONS},
        "late": {"shape": [], "dtype": "bool"},
        "safety": {"shape": [], "dtype": "bool"},
        "success": {"shape": [], "dtype": "bool"},
        "judged_success": {"shape": [], "dtype": "bool"},
        "complete": {"shape": [], "dtype": "bool"},
    }
    if with_model:
        keys["goal_latent_distance"] = {"shape": [], "dtype": "float32"}
    if "sim_state" in obs:
        keys["state"] = {"shape": list(obs["sim_state"].shape), "dtype": "float64"}
        if with_goal_states:
            keys["goal"] = keys["state"]
    return keys


def write_plot(path: Path, state: dict, hz: float) -> None:
    """Success per episode (judged and ground truth) and the step-latency histogram against the period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = state["per_episode"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    idx = np.arange(len(per))
    ax1.bar(idx - 0.2, [e["judged_success"] for e in per], 0.4, label="judged", color="tab:green")
    if per[0]["truth_success"] is not None:
        ax1.bar(idx + 0.2, [e["truth_success"] for e in per], 0.4, label="ground truth", color="tab:gray")
    ax1.set_xticks(idx)
    ax1.set_xlabel("episode")
    ax1.set_yticks([0, 1], ["fail", "success"])
    ax1.legend(fontsize=8)
    step_ms = np.asarray(state["steps"]["t_step"]) * 1000
    ax2.hist(step_ms, bins=30, color="tab:blue")
    ax2.axvline(1000 / hz, color="tab:red", linestyle="--", label=f"period {1000 / hz:.0f} ms")
    ax2.set_xlabel("step latency (ms): observe + plan + send")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
