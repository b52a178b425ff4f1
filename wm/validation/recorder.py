"""Recording a validation run: the store layout of the run, one episode's frames, and the latent goal distance
(the layout is documented in `wm.validation.session`)."""

from __future__ import annotations

import numpy as np

SECTIONS = ("t_observe", "t_plan", "t_send", "t_step")


def latent_distance(model, obs: dict, goal_obs: dict) -> float:
    """Visual-latent MSE between an observation and the goal (the planners' default objective)."""
    import torch

    from wm.device import module_device

    with torch.no_grad():
        pair = {
            k: torch.as_tensor(np.stack([obs[k], goal_obs[k]]), device=module_device(model))[:, None]
            for k in ("rgb", "proprio")
        }
        z = model.encode(pair)[..., : model.spec.visual_dim]  # (2, 1, N, Dv)
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
