"""Refining a policy inside a frozen world model, with no real interaction: PPO (World4RL) or latent-noise steering
(DSRL), both through stable-baselines3's PPO.

- `ppo`: the actor starts from the BC `GaussianPolicy` (its std capped at e^0 as World4RL's), the critic is fresh;
  an optional anchor (`anchor > 0`) subtracts the BC log-likelihood gap of each action from the reward
  (`policies.sb3`), which keeps the policy near the demonstrations where the model is unreliable.
- `dsrl`: a fresh Gaussian steering policy chooses the initial noise of the frozen BC `DiffusionPolicy`, bounded to
  [-1.5, 1.5]; the env actions are the base policy's, from that noise. The base's weights never change.

Imagination (`wm.imagine.ImaginedVectorEnv`, autoreset in the same step as SB3 expects) starts from real histories
of the world model's training store, with hindsight goals `goal_blocks` ahead and a short `horizon`; the reward is
the success head's probability each block (`reward="probability"`: reach the goal and stay) or 1 on success (and the
episode ends), less `uncertainty_penalty` times the disagreement of an ensemble of success heads (MOPO). Training
runs in chunks of `checkpoint_every` imagined steps; every chunk starts from freshly drawn episodes seeded by the
chunk's index and ends with a checkpoint (weights, optimizer, step, torch and numpy random states), so a run killed
at any moment resumes from its last chunk and ends exactly where an unbroken run ends.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from policies.protocol import PolicyConfig
from policies.registry import require_refinable
from policies.sb3 import ImaginedSB3Env, LatentActorCritic
from policies.steered import SteeredPolicy, steering_config
from wm import threads
from wm.errors import WMError
from wm.imagine import ImaginedVectorEnv
from wm.models.checkpoint import (
    latest_checkpoint,
    load_training_state,
    read_config,
    remove_stale_temporaries,
    save_checkpoint,
    truncate_log,
)
from wm.settings import require_at_least


@dataclass
class RefineConfig:
    algo: str = "ppo"  # "ppo" | "dsrl"
    imagined_steps: int = 500_000  # world-model blocks imagined in all (over all envs)
    num_envs: int = 64
    horizon: int = 10  # blocks per imagined episode (50 env steps: the evaluation budget)
    goal_blocks: tuple[int, int] = (1, 5)
    reward: str = "probability"
    anchor: float = 0.0  # ppo: weight of the BC anchor in the reward (0: off)
    uncertainty_penalty: float = 0.0  # reward -= this * the success ensemble's disagreement (MOPO; 0: off)
    bf16: bool = False  # imagine under bfloat16 autocast (GPUs, CPUs with native bf16)
    compile: bool = False  # compile the world model's step (torch.compile; latent models)
    lr: float = 3e-5
    n_steps: int = 32  # blocks per env per rollout: a rollout is n_steps * num_envs imagined steps
    batch_size: int = 512
    n_epochs: int = 5
    gamma: float = 0.95
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    target_kl: float | None = 0.05
    critic_width: int = 256
    checkpoint_every: int = 65_536  # imagined steps per chunk (a multiple of the rollout size)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algo not in ("ppo", "dsrl"):
            raise WMError(f"--algo must be ppo or dsrl, got {self.algo!r}")
        if self.algo == "dsrl" and self.anchor:
            raise WMError("the BC anchor is for --algo ppo; DSRL keeps its base policy frozen and its noise bounded")
        require_at_least("refine", 1, imagined_steps=self.imagined_steps, num_envs=self.num_envs, horizon=self.horizon,
                         n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs,
                         critic_width=self.critic_width, checkpoint_every=self.checkpoint_every)  # fmt: skip
        require_at_least("refine", 0, anchor=self.anchor, ent_coef=self.ent_coef,
                         uncertainty_penalty=self.uncertainty_penalty)  # fmt: skip
        if not (self.lr > 0 and 0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1 and self.clip_range > 0):
            raise WMError(f"refine settings lr={self.lr} and clip_range={self.clip_range} must be positive, gamma="
                          f"{self.gamma} in (0, 1] and gae_lambda={self.gae_lambda} in [0, 1]")  # fmt: skip
        self.goal_blocks = tuple(self.goal_blocks)
        if self.checkpoint_every % self.rollout_size:
            raise WMError(f"checkpoint_every must be a multiple of n_steps * num_envs = {self.rollout_size}")

    @property
    def rollout_size(self) -> int:
        return self.n_steps * self.num_envs

    @property
    def total_steps(self) -> int:
        """`imagined_steps` rounded up to whole rollouts: where the run ends."""
        return -(-self.imagined_steps // self.rollout_size) * self.rollout_size


class Progress(BaseCallback):
    """A progress bar over imagined steps showing imagined success and return; one log line per rollout."""

    def __init__(self, bar: tqdm, log_path: Path):
        super().__init__()
        self.bar, self.log_path = bar, log_path
        self.ended, self.wins, self.returns, self.running = 0, 0, [], None

    def _on_step(self) -> bool:
        rewards, dones, infos = self.locals["rewards"], self.locals["dones"], self.locals["infos"]
        self.running = rewards.copy() if self.running is None else self.running + rewards
        for i in np.flatnonzero(dones):
            self.ended += 1
            self.wins += int(infos[i].get("final_success", False))
            self.returns.append(float(self.running[i]))
            self.running[i] = 0.0
        self.bar.update(len(dones))
        threads.tick()
        return True

    def _on_rollout_end(self) -> None:
        success = self.wins / max(self.ended, 1)
        mean_return = float(np.mean(self.returns)) if self.returns else 0.0
        record = {"imagined_steps": int(self.num_timesteps), "imagined_success": round(success, 4),
                  "return": round(mean_return, 4), "episodes": self.ended}  # fmt: skip
        self.bar.set_postfix(success=f"{success:.2f}", ret=f"{mean_return:.2f}")
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.ended, self.wins, self.returns = 0, 0, []


def _ppo(cfg: RefineConfig, vec: ImaginedSB3Env, actor_config: dict, actor_state) -> PPO:
    return PPO(
        LatentActorCritic,
        vec,
        learning_rate=cfg.lr,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        target_kl=cfg.target_kl,
        policy_kwargs={"actor_config": actor_config, "actor_state": actor_state, "critic_width": cfg.critic_width},
        seed=cfg.seed,
        device=vec.env.device,  # the world model's: imagined latents never leave it for the actor and critic
        verbose=0,
    )


def refine(policy, model, starts, cfg: RefineConfig, out, run_config: dict):
    """Refine `policy` (a BC Gaussian policy for ppo, a BC diffusion policy for dsrl) in `model`'s imagination from
    `starts`; checkpoints under `out/checkpoints`, log in `out/refine_log.jsonl`. Returns `(the refined policy (a
    GaussianPolicy or a SteeredPolicy), imagined steps, seconds of refinement over all runs that made it)`."""
    require_refinable(cfg.algo, policy.cfg.kind, run_config["bc_policy"]["path"])
    out = Path(out)
    env = ImaginedVectorEnv(model, starts, cfg.num_envs, cfg.horizon, policy.cfg.history, cfg.reward,
                            autoreset_mode=AutoresetMode.SAME_STEP,
                            uncertainty_penalty=cfg.uncertainty_penalty, bf16=cfg.bf16,
                            compile=cfg.compile)  # fmt: skip
    if cfg.algo == "ppo":
        actor_config, actor_state = policy.cfg.to_dict(), policy.state_dict()
        vec = ImaginedSB3Env(env, anchor=(policy, cfg.anchor) if cfg.anchor > 0 else None)
    else:
        steered_cfg = PolicyConfig(**{**policy.cfg.to_dict(), "kind": "steered", "base": policy.cfg.to_dict()})
        actor_config, actor_state = steering_config(steered_cfg).to_dict(), None
        bound = np.full(policy.cfg.frameskip * policy.cfg.action_dim, steered_cfg.noise_bound, np.float32)

        def from_noise(obs: dict, noise: torch.Tensor) -> torch.Tensor:
            return policy.act(obs["latents"], obs["goal"], noise=noise).flatten(1)

        vec = ImaginedSB3Env(env, action_map=from_noise, action_space=spaces.Box(-bound, bound, dtype=np.float32))
    agent = _ppo(cfg, vec, actor_config, actor_state)
    for folder in (out, out / "checkpoints"):
        remove_stale_temporaries(folder)
    ckpt = latest_checkpoint(out)
    saved = read_config(ckpt) if ckpt is not None else {}
    if ckpt is not None:
        same = json.loads(json.dumps({"refine": asdict(cfg), "bc_policy": run_config["bc_policy"]}))  # as saved
        if saved.get("refine") != same["refine"] or saved.get("bc_policy") != same["bc_policy"]:
            raise WMError(f"{out} holds a refinement with other settings; pass a new --out or the same settings")
        load_training_state(ckpt, agent.policy, agent.policy.optimizer)
        np.random.set_state(tuple(saved["numpy_rng"]))
        agent.num_timesteps = int(saved["step"])
    truncate_log(out / "refine_log.jsonl", agent.num_timesteps, key="imagined_steps")  # what a kill logged twice
    out.mkdir(parents=True, exist_ok=True)
    started = time.time() - saved.get("seconds", 0.0)  # seconds count over every run that made the policy
    with tqdm(total=cfg.total_steps, initial=agent.num_timesteps, desc=f"refine {cfg.algo}", unit="step") as bar:
        progress = Progress(bar, out / "refine_log.jsonl")
        while agent.num_timesteps < cfg.total_steps:
            chunk = min(cfg.checkpoint_every, cfg.total_steps - agent.num_timesteps)
            vec.seed(cfg.seed * 1_000_003 + agent.num_timesteps // cfg.checkpoint_every)
            agent._last_obs = None  # every chunk starts from freshly drawn episodes: what makes resume exact
            progress.running = None  # (and their returns from 0, as in a resumed run)
            agent.learn(total_timesteps=chunk, reset_num_timesteps=False, callback=progress)
            state = np.random.get_state()
            config = {**run_config, "refine": asdict(cfg), "step": int(agent.num_timesteps),
                      "seconds": time.time() - started,
                      "numpy_rng": [state[0], state[1].tolist(), *state[2:]]}  # fmt: skip
            path = out / "checkpoints" / f"step_{agent.num_timesteps:09d}"
            save_checkpoint(path, agent.policy, config, optimizer=agent.policy.optimizer, rng=True)
            for old in sorted((out / "checkpoints").glob("step_*"))[:-2]:
                shutil.rmtree(old, ignore_errors=True)
    refined = agent.policy.actor
    if cfg.algo == "dsrl":
        refined = SteeredPolicy(steered_cfg).to(env.device)
        refined.base.load_state_dict(policy.state_dict())
        refined.steer.load_state_dict(agent.policy.actor.state_dict())
    return refined.eval(), int(agent.num_timesteps), time.time() - started
