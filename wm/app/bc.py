"""`wm bc`: goal-conditioned behaviour cloning of a policy on a world model's latents, from expert episodes.

The demonstrations are the store's goal-directed episodes (`wm collect --policy expert`, or a policy of your own:
`--policy package.module:factory`; not `random` or `smooth`), minus the episodes the world
model held out (they stay held out for evaluation); `--demos N` keeps N of them, the few-demonstration setting in
which refinement pays off. A tenth of the expert episodes (at least one) is kept apart for the validation loss.
Goals are hindsight goals 1..`goal_blocks` world-model blocks ahead on the demonstrated path (`policies.bc`);
the default 3 (15 env steps) was chosen on tuning goals: on PointMaze goals 25 steps ahead, a Gaussian policy
cloned with goals 1..3 blocks ahead reached 91%, with 1..5 69% and with 1..8 40% (Wall: 1..2 best, 84%).
Training is the shared loop (`wm.train`): progress bar, validation loss, checkpoints with exact resume; overrides
are policy settings (`width=512`, `history=2`, `act_steps=8`) and training settings (`lr=3e-4`, `batch_size=256`).
The world model's latents and the policy's training live on `--device`; `--world-model` may be a `wm train --out`
folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wm.errors import WMError
from wm.outputs import require_run_dir

TRAIN_DEFAULTS = {"lr": 1e-3, "batch_size": 256, "warmup_steps": 100, "weight_decay": 1e-4, "val_every": 500}


@dataclass
class BCConfig:
    data: str
    world_model: str
    policy: str
    out: str
    demos: int | None = None  # keep only this many expert episodes
    steps: int = 4000
    goal_blocks: int = 3  # hindsight goals 1..goal_blocks world-model blocks ahead (see the module docstring)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:K]
    overrides: list = field(default_factory=list)  # key=value policy / training settings
    init: str | None = None  # start from this policy's weights (same kind and shape, the same world model's latents)
    train_episodes: list | None = None  # these demonstrations instead (with val_episodes; `wm improve`)
    val_episodes: list | None = None


def demo_split(expert: np.ndarray, demos: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(train, val)` episodes: a tenth of the expert episodes (at least one) for validation, then `demos` of the
    rest (all by default) for training; a seeded permutation picks both."""
    order = np.random.default_rng(seed).permutation(expert)
    n_val = max(1, round(0.1 * len(order))) if len(order) > 1 else 0
    pool = order[n_val:]
    if demos is not None and demos > len(pool):
        raise WMError(f"--demos {demos} asks for more than the {len(pool)} expert episodes left for training")
    return np.sort(pool[:demos] if demos is not None else pool), np.sort(order[:n_val])


def route_bc_settings(cfg: BCConfig) -> dict:
    """`{"policy": {...}, "train": {...}}`: the run's `key=value` settings, types checked (`wm.settings`)."""
    from policies.protocol import PolicyConfig
    from wm.settings import route_settings
    from wm.train import TrainConfig

    return route_settings(list(cfg.overrides), {"policy": PolicyConfig, "train": TrainConfig},
                          exclude=("kind", "steps", "seed"))  # fmt: skip


def bc_configs(cfg: BCConfig, spec, trained_on):
    """`(PolicyConfig, TrainConfig)` of the run: the world model's shapes, the env's action bounds, the flags and
    the `key=value` settings (types checked, `wm.settings`)."""
    from policies.protocol import PolicyConfig
    from wm.train import TrainConfig

    routed = route_bc_settings(cfg)
    low, high = trained_on.action_bounds
    policy_cfg = PolicyConfig.for_world_model(spec, low, high, kind=cfg.policy, **routed["policy"])
    train_cfg = TrainConfig(**{**TRAIN_DEFAULTS, "seed": cfg.seed, **routed["train"], "steps": cfg.steps})
    return policy_cfg, train_cfg


def demonstrations(cfg: BCConfig, trained_on) -> tuple[np.ndarray, np.ndarray]:
    """`(train, val)` expert episodes of `cfg.data` (`demo_split`), the world model's held-out episodes left out."""
    from envs.behaviour import is_goal_directed
    from wm.data.collection import episodes_collected_with
    from wm.data.store import EpisodeStore

    with EpisodeStore.open(cfg.data) as store:
        trained_on.require_same_data(store)
        if cfg.train_episodes is not None:
            chosen = np.asarray(cfg.train_episodes + (cfg.val_episodes or []), np.int64)
            if len(chosen) and (chosen.min() < 0 or chosen.max() >= store.num_episodes):
                raise WMError(f"demonstration episodes must be in [0, {store.num_episodes}) for {cfg.data}")
            train, val = (np.sort(np.asarray(e or [], np.int64)) for e in (cfg.train_episodes, cfg.val_episodes))
            return train, val
        expert = episodes_collected_with(store, is_goal_directed)
        if trained_on.is_training_data(store):
            expert = np.setdiff1d(expert, trained_on.val_episodes)  # stay held out
    if len(expert) == 0:
        raise WMError(f"{cfg.data} has no goal-directed episodes to clone; collect some with `wm collect --policy "
                      "expert` (built-in envs) or `--policy package.module:factory` (your own)")  # fmt: skip
    return demo_split(expert, cfg.demos, cfg.seed)


def warm_start(cfg: BCConfig, policy_cfg, device):
    """`(PolicyConfig, policy)` of `--init`: its config and weights, once it is checked to be a policy of the kind
    asked for, with the shapes `policy_cfg` has (policy settings cannot change), reading `cfg.world_model`'s latents."""
    from policies.checkpoint import load_policy

    policy, _, _, _ = load_policy(cfg.init, cfg.world_model, device)
    if policy.cfg.kind != cfg.policy:
        raise WMError(f"--init {cfg.init} is a {policy.cfg.kind} policy; pass --policy {policy.cfg.kind} or another")
    init_cfg = policy.cfg.to_dict()
    changed = sorted(k for k, v in route_bc_settings(cfg)["policy"].items() if init_cfg.get(k) != v)
    if changed:
        raise WMError(f"--init keeps the policy's settings; drop {', '.join(changed)} (or set them as it has them)")
    for name in ("history", "frameskip", "action_dim", "latent_dim", "tokens"):
        if getattr(policy.cfg, name, None) != getattr(policy_cfg, name, None):
            raise WMError(f"--init {cfg.init} has {name}={getattr(policy.cfg, name, None)}, this world model "
                          f"{getattr(policy_cfg, name, None)}; pass a policy of this world model")  # fmt: skip
    return policy.cfg, policy.train()


def run_bc(cfg: BCConfig) -> dict:
    import torch

    from envs.registry import proprio_velocity_dims
    from policies.bc import HindsightBlocks
    from policies.checkpoint import world_model_record
    from policies.registry import CLONED, build_policy
    from wm.data.latent_frames import EpisodeLatents
    from wm.device import resolve_device
    from wm.models.checkpoint import load_checkpoint
    from wm.train import Trainer

    require_run_dir(cfg.out)
    if cfg.policy not in CLONED:
        raise WMError(f"--policy must be one of {', '.join(CLONED)}, got {cfg.policy!r}")
    if cfg.demos is not None and cfg.demos < 1:
        raise WMError(f"--demos must be at least 1, got {cfg.demos}")
    device = resolve_device(cfg.device)
    model, wm_config = load_checkpoint(cfg.world_model, device)
    trained_on = wm_config.trained_on
    policy_cfg, train_cfg = bc_configs(cfg, model.spec, trained_on)
    train_eps, val_eps = demonstrations(cfg, trained_on)
    velocity_dims = proprio_velocity_dims(trained_on.env_id)

    def blocks(episodes):
        frames = EpisodeLatents(model, cfg.data, episodes, velocity_dims)
        return HindsightBlocks(frames, policy_cfg.history, policy_cfg.frameskip, goal_blocks=(1, cfg.goal_blocks))

    train_ds, val_ds = blocks(train_eps), blocks(val_eps) if len(val_eps) else None
    torch.manual_seed(cfg.seed)  # the initial weights follow the run's seed, not whatever ran before
    if cfg.init is None:
        policy = build_policy(policy_cfg.to_dict())
    else:
        policy_cfg, policy = warm_start(cfg, policy_cfg, device)
    run_config = {
        "policy": policy_cfg.to_dict(),
        "world_model": world_model_record(wm_config.path),
        "data": {
            "store": str(Path(cfg.data).resolve()),
            "spec": trained_on.spec,
            "demos": len(train_eps),
            "train_episodes": train_eps.tolist(),
            "val_episodes": val_eps.tolist(),
            "goal_blocks": [1, cfg.goal_blocks],
            "velocity_dims": list(velocity_dims),
        },  # fmt: skip
        "bc": {"policy": cfg.policy, "demos_requested": cfg.demos, "overrides": list(cfg.overrides)},
    }
    if cfg.init is not None:
        run_config["init"] = {"policy": str(cfg.init)}
    trainer = Trainer(policy, train_ds, val_ds, train_cfg, cfg.out, run_config, final="policy", identity="policy",
                      device=device)  # fmt: skip
    if trainer.resume():
        print(f"resuming {cfg.out} from step {trainer.step}")
    summary = trainer.fit()
    return {**summary, "demos": len(train_eps), "train_items": len(train_ds), "val_episodes": len(val_eps)}
