"""The bridge to stable-baselines3: imagination as an SB3 `VecEnv`, and our Gaussian policy as an SB3 actor-critic.

`ImaginedSB3Env(env)` wraps an `ImaginedVectorEnv` built with `autoreset_mode=SAME_STEP` in SB3's `VecEnv`
interface (`infos[i]["terminal_observation"]` and `"TimeLimit.truncated"` where an episode ends, as SB3 expects).
Optional, per step: `anchor=(bc_policy, weight)` subtracts `weight * mean(((a - mu_bc) / sigma_bc)^2) / 2` from the
reward, the BC log-likelihood of the action relative to BC's own mean: a pull back toward the demonstrations
where the model is unreliable; `action_map(obs, a) -> env actions` turns the learner's actions into env actions
(DSRL: the frozen diffusion policy run from the learner's noise).

`LatentActorCritic` is an SB3 `ActorCriticPolicy` whose actor is a `GaussianPolicy` (built from `actor_config`,
loaded from `actor_state`: the BC weights) and whose critic is fresh (`LatentFeatures` + an MLP). PPO samples from
the actor's distribution (state-independent std, capped as the actor caps it) and trains both with one optimizer.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from policies.features import LatentFeatures, mlp
from policies.registry import build_policy


class ImaginedSB3Env(VecEnv):
    def __init__(self, env, anchor=None, action_map=None, action_space: spaces.Box | None = None):
        self.env, self.anchor, self.action_map = env, anchor, action_map  # before VecEnv's init, which reads env
        super().__init__(env.num_envs, env.single_observation_space, action_space or env.single_action_space)
        self._obs: dict | None = None
        self._actions: np.ndarray | None = None
        self.seed_value: int | None = None

    def seed(self, seed: int | None = None):
        self.seed_value = seed
        return [seed] * self.num_envs

    def reset(self):
        self._obs, _ = self.env.reset(seed=self.seed_value)
        self.seed_value = None  # later resets continue the env's own random stream
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, np.float32)

    @torch.no_grad()
    def step_wait(self):
        actions = torch.as_tensor(self._actions, device=self.env.device)  # SB3 hands numpy: one copy in
        if self.action_map is not None or self.anchor is not None:  # only these read the latents again
            obs = {k: torch.as_tensor(v, device=self.env.device) for k, v in self._obs.items()}
        env_actions = self.action_map(obs, actions) if self.action_map is not None else actions
        new_obs, reward, terminated, truncated, info = self.env.step(env_actions)  # stays on the device
        reward = reward.astype(np.float32)
        if self.anchor is not None:
            bc, weight = self.anchor
            dist = bc.distribution(obs["latents"], obs["goal"])
            reward -= weight * (0.5 * ((env_actions - dist.mean) / dist.stddev) ** 2).mean(-1).cpu().numpy()
        dones = terminated | truncated
        infos = [{"success": bool(info["success"][i]), "success_prob": float(info["success_prob"][i])}
                 for i in range(self.num_envs)]  # fmt: skip
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = {k: v[i] for k, v in info["final_obs"].items()}
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["final_success"] = bool(info["final_info"]["success"][i])
        self._obs = new_obs
        return new_obs, reward, dones, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.env, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self.env, method_name)(*args, **kwargs)] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


class LatentActorCritic(ActorCriticPolicy):
    def __init__(self, observation_space, action_space, lr_schedule, actor_config: dict, actor_state=None,
                 critic_width: int = 256, **kwargs):  # fmt: skip
        self.actor_config, self.actor_state, self.critic_width = actor_config, actor_state, critic_width
        super().__init__(observation_space, action_space, lr_schedule, ortho_init=False, **kwargs)

    def _build(self, lr_schedule) -> None:
        self.actor = build_policy(self.actor_config)
        if self.actor_state is not None:
            self.actor.load_state_dict(self.actor_state)
        cfg = self.actor.cfg
        self.critic_features = LatentFeatures(cfg)
        self.critic = mlp(cfg.width, self.critic_width, 2, 1)
        self.action_dist = DiagGaussianDistribution(cfg.frameskip * cfg.action_dim)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _dist(self, obs: dict):
        return self.actor.distribution(obs["latents"], obs["goal"])

    def _values(self, obs: dict) -> torch.Tensor:
        return self.critic(self.critic_features(obs["latents"], obs["goal"]))

    def forward(self, obs: dict, deterministic: bool = False):
        dist = self._dist(obs)
        actions = dist.mean if deterministic else dist.sample()
        return actions, self._values(obs), dist.log_prob(actions).sum(-1)

    def evaluate_actions(self, obs: dict, actions: torch.Tensor):
        dist = self._dist(obs)
        return self._values(obs), dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def predict_values(self, obs: dict) -> torch.Tensor:
        return self._values(obs)

    def get_distribution(self, obs: dict):
        dist = self._dist(obs)
        return self.action_dist.proba_distribution(dist.mean, dist.stddev.log())

    def _predict(self, obs: dict, deterministic: bool = False) -> torch.Tensor:
        dist = self._dist(obs)
        return dist.mean if deterministic else dist.sample()
