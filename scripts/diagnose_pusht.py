"""Diagnose zero-shot planning on PushT: which part (model, objective, search, resolution) holds it back.

On the start/goal pairs `wm plan` draws (held-out episodes of `--data`, goal 25 steps ahead, pairs solved at the
start redrawn; the same `--seed` gives the same pairs), measures and prints as JSON:
  zero        zero-action success (the trivial baseline);
  oracle      (a) the simulator as the world model (`wm.evaluation.oracle`): the same encoder, objective, planner
              and budget (`--oracle-episodes` pairs, frames rendered and encoded for every candidate), and the
              search alone: the same planner on the block pose from the simulator, scored by its distance to the
              goal pose (`--search-episodes` pairs);
  objective   (b) does the MPC objective rank the expert's recorded 25-step future above perturbed ones
              (its actions + N(0, sigma) noise)? On the frames the simulator renders (the objective alone) and on
              the model's imagined latents (model + objective); the true goal distance as reference; and how well
              the objective's ranking of all futures agrees with their true final distances (Spearman);
  open_loop   (c) the model's open-loop accuracy on pushes: an MLP probe (fitted on half of `--data`'s episodes)
              reads the block pose from latents; block position / angle error at horizon 1..8 of the model's
              rollout under the recorded actions, against copy-last and the probe's floor on real frames, on
              windows of the other half where the block moves >= 5 cm;
  resolution  (d) pixels per success threshold, and how far the encoder's visual latent moves when the block is
              shifted or turned by a fraction of the thresholds, against the same shift of the pusher.

    python scripts/diagnose_pusht.py --checkpoint checkpoints/jepa-pusht --data data/Tune8-PushT --out runs/diag
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import envs as _envs  # noqa: F401  (first: the GL/LLVM load order)
from envs.controller import ZeroActions
from envs.push_t import block_pose, wrap_angle
from envs.registry import make_env
from planners.mpc import MPCConfig, build_mpc, with_preset
from planners.objectives import GoalObjective
from wm.data.store import EpisodeStore
from wm.evaluation.goal_reaching import Problems, run_controller
from wm.evaluation.metrics import rate
from wm.evaluation.oracle import FeatureGoalController, SimulatorWorldModel
from wm.goals import dataset_goals, goal_batch
from wm.models.checkpoint import load_checkpoint

ENV, OFFSET, BUDGET = "wm/PushT-v0", 25, 50
POSE_SCALE = 0.25  # m per rad: the env's goal_distance weighs angle like this


def pose_features(sim) -> np.ndarray:
    """`sim`'s block pose as `(x, y, 0.25 cos th, 0.25 sin th)`: squared distances between them approximate the env's
    goal distance (position error + 0.25 m/rad x angle error) for small errors."""
    x, y, th = block_pose(sim.get_state())
    return np.array([x, y, POSE_SCALE * np.cos(th), POSE_SCALE * np.sin(th)], np.float32)


def envs_for(pairs: list, size: int) -> list:
    return [make_env(ENV, size, BUDGET + 1).unwrapped for _ in pairs]


def run_summary(envs: list, pairs: list, controller, desc: str) -> dict:
    """`controller` on `pairs` in `envs` for the budget: success (95% interval), median final distance, seconds."""
    started = time.time()
    out = run_controller(Problems(ENV, envs, pairs, {}, BUDGET), controller, desc=desc, videos=0)
    return {**rate(out.success), "median_final_distance": round(float(np.median(out.distance)), 3),
            "seconds": round(time.time() - started)}  # fmt: skip


def oracle_runs(model, cfg: MPCConfig, pairs, n_frames: int, n_search: int, seed: int) -> dict:
    size = model.spec.image_size
    result = {}
    if n_frames:
        sub = pairs[:n_frames]
        envs, sim = envs_for(sub, size), make_env(ENV, size).unwrapped
        sim.reset(seed=0)
        mpc = build_mpc(SimulatorWorldModel(model, envs, sim), cfg, seed=seed)
        result["frames"] = run_summary(envs, sub, mpc, "oracle (frames)")
    if n_search:
        sub = pairs[:n_search]
        envs, sim = envs_for(sub, size), make_env(ENV, size).unwrapped
        sim.reset(seed=0)
        mpc = build_mpc(SimulatorWorldModel(model, envs, sim, features=pose_features), cfg, seed=seed)
        mpc.objective = GoalObjective("mse", cfg.objective_mode)  # the pose distance over the horizon, no proprio
        goals = []
        for p in sub:
            sim.set_state(p["goal"])
            goals.append(pose_features(sim))
        result["pose_search"] = run_summary(envs, sub, FeatureGoalController(mpc, np.stack(goals)), "oracle (pose)")
    return result


@torch.no_grad()
def objective_ranking(model, objective, store_path, pairs, seed: int, per_sigma: int = 5) -> dict:
    """(b): per pair, the expert's recorded 25-step future and `per_sigma` perturbed copies per sigma."""
    sigmas = (0.3, 0.6, 1.0)
    rng = np.random.default_rng(seed)
    spec = model.spec
    fs, size = spec.frameskip, spec.image_size
    blocks = OFFSET // fs
    sim = make_env(ENV, size).unwrapped
    sim.reset(seed=0)
    top1 = {"true_distance": [], "objective_on_real_frames": [], "objective_on_imagined": []}
    pairwise, spearman = {k: [] for k in top1}, {k: [] for k in top1}
    with EpisodeStore.open(store_path) as store:
        for p in pairs:
            ep = store.episode(p["source"]["episode"], ["action"])
            t = p["source"]["t"]
            expert = ep["action"][t : t + blocks * fs]  # (25, A)
            futures = [expert] + [np.clip(expert + rng.normal(0, s, expert.shape), -1, 1) for s in sigmas
                                  for _ in range(per_sigma)]  # fmt: skip
            futures = np.stack(futures).astype(np.float32)  # (F, 25, A)
            frames, prop, dist = [], [], []
            for acts in futures:
                sim.set_state(p["start"])
                for k in range(blocks):
                    for a in acts[k * fs : (k + 1) * fs]:
                        sim.advance(a)
                    obs = sim.observe()
                    frames.append(obs["rgb"])
                    prop.append(obs["proprio"])
                dist.append(sim.goal_distance(sim.get_state(), p["goal"]))
            n = len(futures)
            z_real = model.encode({"rgb": torch.from_numpy(np.stack(frames))[:, None],
                                   "proprio": torch.from_numpy(np.stack(prop))[:, None]})  # fmt: skip
            z_real = z_real.reshape(1, n, blocks, *z_real.shape[-2:])
            sim.set_state(p["start"])
            start_obs = sim.observe()
            z0 = model.encode({k: torch.as_tensor(start_obs[k])[None, None] for k in ("rgb", "proprio")})
            z_img = model.rollout(z0, torch.from_numpy(futures.reshape(1, n, blocks, fs * futures.shape[-1])))
            goal = goal_batch([p], "rest", sim.proprio_velocity_dims)
            z_goal = model.encode({k: torch.as_tensor(v)[:, None] for k, v in goal.items()})[:, 0]
            costs = {
                "true_distance": np.array(dist),
                "objective_on_real_frames": objective(z_real, z_goal)[0].numpy(),
                "objective_on_imagined": objective(z_img, z_goal)[0].numpy(),
            }
            for k, c in costs.items():
                top1[k].append(float(np.argmin(c) == 0))
                pairwise[k].append(float(np.mean(c[1:] > c[0])))
                ranks = np.argsort(np.argsort(c)), np.argsort(np.argsort(costs["true_distance"]))
                spearman[k].append(float(np.corrcoef(*ranks)[0, 1]))
    chance = 1 / (1 + per_sigma * len(sigmas))
    return {
        "futures_per_pair": 1 + per_sigma * len(sigmas),
        "sigmas": list(sigmas),
        "expert_ranked_first": {k: round(float(np.mean(v)), 3) for k, v in top1.items()},
        "expert_beats_perturbed_pairwise": {k: round(float(np.mean(v)), 3) for k, v in pairwise.items()},
        "chance_first": round(chance, 3),
        "rank_correlation_with_true_final_distance": {k: round(float(np.mean(v)), 3) for k, v in spearman.items()},
    }


@torch.no_grad()
def open_loop(model, store_path, seed: int, horizon: int = 8, min_move: float = 0.05, max_windows: int = 400) -> dict:
    """(c): block pose read from latents by an MLP probe, along the model's rollouts on pushes."""
    spec = model.spec
    fs, h = spec.frameskip, spec.num_hist
    rng = np.random.default_rng(seed)
    with EpisodeStore.open(store_path) as store:
        n_ep = store.num_episodes
        order = rng.permutation(n_ep)
        fit_eps, test_eps = order[: n_ep // 2], order[n_ep // 2 :]
        eps = {int(e): store.episode(int(e), ["rgb", "proprio", "action", "state"]) for e in order}

    def encode(ep, idx):
        return model.encode({"rgb": torch.from_numpy(ep["rgb"][idx])[None], "proprio":
                             torch.from_numpy(ep["proprio"][idx])[None]})[0, :, 0]  # (T, D)  # fmt: skip

    def target(states):
        th = wrap_angle(states[:, 4])
        return np.stack([states[:, 2], states[:, 3], np.cos(th), np.sin(th)], 1)

    xs, ys = [], []
    for e in fit_eps:
        ep = eps[int(e)]
        idx = np.arange(0, len(ep["rgb"]), 2)
        xs.append(encode(ep, idx).numpy())
        ys.append(target(ep["state"][idx]))
    x, y = np.concatenate(xs), np.concatenate(ys)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                              torch.nn.GELU(), torch.nn.Linear(256, 4))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt, yt = torch.from_numpy((x - mu) / sd).float(), torch.from_numpy(y).float()
    with torch.enable_grad():
        for _ in range(2000):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(xt), yt).backward()
            opt.step()

    def probe(z):  # (..., D) -> pose (x, y, th)
        out = net(torch.from_numpy((z.reshape(-1, z.shape[-1]) - mu) / sd).float()).numpy()
        return np.stack([out[:, 0], out[:, 1], np.arctan2(out[:, 3], out[:, 2])], 1).reshape(*z.shape[:-1], 3)

    windows = []
    span = (h - 1 + horizon) * fs
    for e in test_eps:
        ep = eps[int(e)]
        for t0 in range(0, len(ep["rgb"]) - span, fs):
            frames = t0 + fs * np.arange(h + horizon)
            poses = ep["state"][frames][:, 2:4]
            if np.linalg.norm(poses[-1] - poses[h - 1]) >= min_move:
                windows.append((int(e), t0))
    picks = [windows[i] for i in rng.permutation(len(windows))[:max_windows]]
    err = {k: np.zeros((len(picks), horizon, 2)) for k in ("model", "copy_last", "probe_on_real_frames")}
    for n, (e, t0) in enumerate(picks):
        ep = eps[e]
        frames = t0 + fs * np.arange(h + horizon)
        z = encode(ep, frames)  # (h+H, D)
        acts = ep["action"][t0 : t0 + span].reshape(h - 1 + horizon, fs * ep["action"].shape[-1])
        pred = model.rollout(z[None, :h, None], torch.from_numpy(acts[h - 1 :])[None],
                             past_actions=torch.from_numpy(acts[: h - 1])[None])[0, :, 0]  # fmt: skip
        true = ep["state"][frames[h:]]
        true_pose = np.c_[true[:, 2:4], wrap_angle(true[:, 4])]
        last = ep["state"][frames[h - 1]]
        guesses = {"model": probe(pred.numpy()), "copy_last": np.tile([last[2], last[3], wrap_angle(last[4])],
                   (horizon, 1)), "probe_on_real_frames": probe(z[h:].numpy())}  # fmt: skip
        for k, g in guesses.items():
            err[k][n, :, 0] = np.linalg.norm(g[:, :2] - true_pose[:, :2], axis=1)
            err[k][n, :, 1] = np.degrees(np.abs(wrap_angle(g[:, 2] - true_pose[:, 2])))
    return {
        "windows": len(picks),
        "min_block_move_m": min_move,
        "horizon_steps": list(range(1, horizon + 1)),
        "block_position_error_m": {k: np.round(v[:, :, 0].mean(0), 3).tolist() for k, v in err.items()},
        "block_angle_error_deg": {k: np.round(v[:, :, 1].mean(0), 1).tolist() for k, v in err.items()},
        "probe_fitted_on_frames": len(x),
    }


@torch.no_grad()
def resolution(model, pairs, seed: int) -> dict:
    """(d): pixels per threshold; visual-latent shift under block / pusher displacements."""
    size = model.spec.image_size
    sim = make_env(ENV, size).unwrapped
    sim.reset(seed=0)
    view = 2 * sim.half_arena + 0.08  # metres the camera sees edge to edge
    rng = np.random.default_rng(seed)
    vis = model.spec.visual_dim
    shifts, turns = (0.02, 0.04, 0.08, 0.16), (np.pi / 36, np.pi / 18, np.pi / 9, 2 * np.pi / 9)
    rows = {f"block_shift_{d}m": [] for d in shifts} | {f"block_turn_{round(np.degrees(a))}deg": [] for a in turns}
    rows |= {f"pusher_shift_{d}m": [] for d in shifts}

    def z_of(state):
        sim.set_state(state)
        obs = sim.observe()
        return model.encode({k: torch.as_tensor(obs[k])[None, None] for k in ("rgb", "proprio")})[0, 0, 0, :vis]

    for p in pairs:
        s0 = np.asarray(p["goal"], np.float64)
        z0 = z_of(s0)
        for d in shifts:
            u = rng.normal(size=2)
            u /= np.linalg.norm(u)
            for key, dims in ((f"block_shift_{d}m", (2, 3)), (f"pusher_shift_{d}m", (0, 1))):
                s = s0.copy()
                s[list(dims)] += d * u
                rows[key].append(float(((z_of(s) - z0) ** 2).mean()))
        for a in turns:
            s = s0.copy()
            s[4] += a * rng.choice([-1, 1])
            rows[f"block_turn_{round(np.degrees(a))}deg"].append(float(((z_of(s) - z0) ** 2).mean()))
    return {
        "image_px": size,
        "metres_per_px": round(view / size, 4),
        "success_radius_px": round(sim.success_pos / view * size, 2),
        "success_angle_at_bar_tip_px": round(0.25 * sim.success_angle / view * size, 2),
        "success_radius_px_at": {s: round(sim.success_pos / view * s, 2) for s in (96, 128, 224)},
        "visual_latent_mse_from_goal": {k: round(float(np.mean(v)), 4) for k, v in rows.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="store of held-out PushT episodes (the tuning goals)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--oracle-episodes", type=int, default=10, help="pairs for the frame oracle (slow: ~6 min each)")
    ap.add_argument("--search-episodes", type=int, default=50, help="pairs for the pose-search oracle")
    ap.add_argument("--parts", default="zero,oracle,objective,open_loop,resolution")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--mpc",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="MPC settings over the checkpoint's preset, e.g. proprio_weight=1 iterations=30",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_checkpoint(args.checkpoint, "cpu")
    given = {k: None for k in MPCConfig.__dataclass_fields__}
    for item in args.mpc:
        key, value = item.split("=", 1)
        given[key] = type(getattr(MPCConfig(), key))(value) if key != "hold_in_block" else value == "true"
    cfg = with_preset(MPCConfig(**given), config.plan_preset)
    env = make_env(ENV, model.spec.image_size).unwrapped
    pairs = dataset_goals(args.data, config.trained_on, args.episodes, OFFSET, np.random.default_rng(args.seed),
                          solved=env.is_success)  # fmt: skip
    parts = args.parts.split(",")
    report = {"checkpoint": args.checkpoint, "data": args.data, "pairs": len(pairs), "mpc": vars(cfg).copy()}
    path = out / "diagnosis.json"

    def save(key, value):
        report[key] = value
        path.write_text(json.dumps(report, indent=2))
        print(json.dumps({key: value}), flush=True)

    size = model.spec.image_size
    if "zero" in parts:
        zero = ZeroActions(model.spec.action_dim)
        save("zero", run_summary(envs_for(pairs, size), pairs, zero, "zero actions"))
    objective = build_mpc(model, cfg).objective
    if "resolution" in parts:
        save("resolution", resolution(model, pairs, args.seed))
    if "objective" in parts:
        save("objective", objective_ranking(model, objective, args.data, pairs, args.seed))
    if "open_loop" in parts:
        save("open_loop", open_loop(model, args.data, args.seed))
    if "oracle" in parts:
        save("oracle", oracle_runs(model, cfg, pairs, args.oracle_episodes, args.search_episodes, args.seed))


if __name__ == "__main__":
    main()
