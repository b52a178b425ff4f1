"""`wm refine`: improve a BC policy inside its frozen world model, with no real interaction (`policies.refine`).

`--algo ppo` refines a Gaussian BC policy with PPO (World4RL); `--algo dsrl` steers a diffusion BC policy through
its initial noise (DSRL). Starts and goals come from the world model's training store (its training episodes;
`--data` names another store of the same env), the reward from its frozen success head. Everything lands in
`--out`: `checkpoints/` (resumed from after a crash), `refine_log.jsonl` (imagined success and return per
rollout), `curve.png`, and `policy/`: a normal policy checkpoint that `wm eval-policy`, `wm validate --controller
policy` and the robot loop take unchanged; its config records the BC policy, the world model, the algorithm and
the imagined steps. With `--eval-env`, the BC and the refined policy then run on the same held-out goals in the
real env (`eval/bc`, `eval/refined`): counted apart, never fed back. Overrides are `RefineConfig` fields
(`num_envs=128`, `horizon=10`, `anchor=0.1`, `lr=3e-5`). Imagination, PPO and the evaluation run on `--device`;
`--policy` (and `--world-model`) may be a `wm bc --out` (`wm train --out`) folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wm.errors import WMError
from wm.outputs import require_run_dir


@dataclass
class RefineRunConfig:
    policy: str
    algo: str
    out: str
    imagined_steps: int = 500_000
    world_model: str | None = None
    data: str | None = None  # store to start imagination from (default: the world model's training store)
    eval_env: str | None = None
    eval_data: str | None = None  # held-out goals for --eval-env (default: the world model's training store)
    eval_episodes: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:K]
    overrides: list = field(default_factory=list)


def plot_curve(out: Path, log: list[dict], real: dict | None) -> None:
    """`out/curve.png`: imagined success against imagined steps (and the real success of BC and refined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([r["imagined_steps"] for r in log], [r["imagined_success"] for r in log], label="imagined success")
    for name, colour in (("bc", "tab:gray"), ("refined", "tab:green")):
        if real and name in real:
            ax.axhline(real[name], color=colour, linestyle="--", label=f"real success, {name}")
    ax.set_xlabel("imagined steps (world-model blocks)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    plt.close(fig)


def refine_config(cfg: RefineRunConfig):
    """The `RefineConfig` of the run: its flags and `key=value` settings (types checked, `wm.settings`)."""
    from policies.refine import RefineConfig
    from wm.settings import route_settings

    own = ("algo", "imagined_steps", "seed")  # set by flags, not settings
    settings = route_settings(list(cfg.overrides), {"refine": RefineConfig}, exclude=own)["refine"]
    return RefineConfig(algo=cfg.algo, imagined_steps=cfg.imagined_steps, seed=cfg.seed, **settings)


def imagination_starts(cfg: RefineRunConfig, model, trained_on, goal_blocks: int):
    """Where imagined episodes start (`wm.imagine.StoreStarts`): the training episodes of the world model's store
    (`--data`: another store of its env, all of it); its held-out episodes stay out."""
    from envs.registry import proprio_velocity_dims
    from wm.data.store import EpisodeStore
    from wm.imagine import StoreStarts

    store = cfg.data or trained_on.store
    if not Path(store).is_dir():
        raise WMError(f"the store {store} is not here; pass --data STORE of the world model's env to start from")
    with EpisodeStore.open(store) as s:
        trained_on.require_same_data(s)
        training_store = trained_on.is_training_data(s)
    episodes = list(trained_on.train_episodes) if training_store else None
    return StoreStarts(model, store, episodes=episodes, goal_blocks=goal_blocks,
                       velocity_dims=proprio_velocity_dims(trained_on.env_id))  # fmt: skip


def run_refine(cfg: RefineRunConfig) -> dict:
    from policies.checkpoint import load_policy, weights_sha256, world_model_record
    from policies.refine import refine
    from wm.device import resolve_device
    from wm.models.checkpoint import resolve_checkpoint, save_checkpoint

    require_run_dir(cfg.out)
    refine_cfg = refine_config(cfg)
    policy_path = resolve_checkpoint(cfg.policy, "policy")
    policy, config, model, wm_config = load_policy(policy_path, cfg.world_model, resolve_device(cfg.device))
    if model.success_mode is None:
        raise WMError("the world model has no success head, which is the reward of refinement; train one with "
                      "`wm train --init CK success_head=true only=success`")  # fmt: skip
    starts = imagination_starts(cfg, model, wm_config.trained_on, refine_cfg.goal_blocks)
    out = Path(cfg.out)
    bc_record = {"path": str(policy_path), "sha256": weights_sha256(policy_path), "kind": policy.cfg.kind}
    run_config = {"bc_policy": bc_record, "world_model": world_model_record(wm_config.path)}  # the one refined in
    refined, steps, seconds = refine(policy, model, starts, refine_cfg, out, run_config)
    final = {"policy": refined.cfg.to_dict(), "world_model": run_config["world_model"], "refined_from": bc_record,
             "refine": asdict(refine_cfg), "algo": cfg.algo, "imagined_steps": steps, "data": config.data,
             "step": steps}  # fmt: skip
    save_checkpoint(out / "policy", refined, final)
    log = [json.loads(line) for line in (out / "refine_log.jsonl").read_text().splitlines()]
    summary = {"policy": str(out / "policy"), "algo": cfg.algo, "imagined_steps": steps,
               "seconds": round(seconds, 1), "imagined_success_first": log[0]["imagined_success"],
               "imagined_success_last": log[-1]["imagined_success"], "real_env_steps_in_refinement": 0}  # fmt: skip
    real = None
    if cfg.eval_env:
        real = evaluate_both(cfg, policy, refined, model, wm_config, out)
        summary["real"] = real
    plot_curve(out, log, real)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_both(cfg: RefineRunConfig, bc, refined, model, wm_config, out: Path) -> dict:
    """The BC and the refined policy on the same held-out goals in the real env (and imagined), reports in
    `out/eval/{bc,refined}`; returns their real success rates."""
    from policies.evaluation import evaluate_policy
    from wm.evaluation.goal_reaching import held_out_problems, write_report

    budget, goal_offset = 50, 25
    problems = held_out_problems(model.spec, wm_config.trained_on, cfg.eval_env, episodes=cfg.eval_episodes,
                                 budget=budget, goal_offset=goal_offset, seed=cfg.seed, data=cfg.eval_data,
                                 scratch=out / "eval" / "goal_store", what="policy evaluation")  # fmt: skip
    rates, zero = {}, None
    for name, policy in (("bc", bc), ("refined", refined)):
        ev = evaluate_policy(policy, model, problems, problems.goals["store"], goal_offset, imagined=True,
                             seed=cfg.seed, zero=zero)  # fmt: skip
        zero = ev.zero  # the same pairs: the zero-action baseline is run once
        write_report(out / "eval" / name, ev.results, problems, ev.run, ev.zero, ev.imagined, "policy call (ms)")
        rates[name] = ev.results["success_rate"]
        rates[f"{name}_95ci"] = ev.results["success_95ci"]
        rates[f"{name}_imagined"] = ev.results["imagined"]["rate"]
    problems.close()
    return rates
