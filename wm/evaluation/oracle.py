"""The simulator as a world model: an oracle that bounds what a planner and its objective can reach.

`SimulatorWorldModel` meets the world-model contract (`wm.models.protocol.WorldModel`) with a learned model's
encoder and the simulator's dynamics: `rollout` restores each problem's current simulator state in a private copy
of the env, runs the candidate actions there, renders the frame at the end of every block and encodes it with the
learned model's encoder. Given to the same MPC controller (planner, budget, objective) as the learned model, it
shows what planning would reach with a perfect model: where the oracle succeeds and the model does not, the model
is what holds planning back; where the oracle fails too, the objective or the search does.

With `features(env) -> (F,)` (e.g. the pose of the object to move) rollouts return those ground-truth features of
each block's end state as one token `(..., 1, F)` instead of encoded frames: with an objective on them (the goal's
features as the goal latent) this bounds what the search alone can reach, with a perfect model and objective.

It reads ground truth (the live envs' states), so it is a diagnostic, never a controller to evaluate. Cost per
candidate per block: physics (about 0.25 ms for PushT's 50 physics steps) plus, with frames, a render and an
encoder pass (about 0.7 + 0.6 ms at 64 px on one CPU core).
"""

from __future__ import annotations

import numpy as np
import torch

from wm.device import module_device
from wm.errors import WMError


class SimulatorWorldModel:
    """`model`: the learned world model whose encoder (and spec, decoder) is used; `envs`: the B live envs of the
    episodes being planned for, in problem order (their current states are where rollouts start); `sim`: one more
    env of the same kind, image size and camera, that the rollouts run in; `features`: see the module docstring.
    `chunk`: frames per encoder call."""

    def __init__(self, model, envs: list, sim, features=None, chunk: int = 4096):
        if not all(callable(getattr(sim, k, None)) for k in ("get_state", "set_state", "advance", "observe")):
            raise WMError(f"{type(sim).__name__} cannot serve as an oracle: it needs get_state, set_state, advance "
                          "and observe (the built-in MuJoCo envs have them)")  # fmt: skip
        self.model, self.envs, self.sim, self.features, self.chunk = model, envs, sim, features, chunk
        self.spec = model.spec
        self.device = module_device(model)

    # The learned model's encoder and decoder, unchanged.
    def encode(self, obs: dict) -> torch.Tensor:
        return self.model.encode(obs)

    @property
    def can_decode(self) -> bool:
        return self.model.can_decode

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    @torch.no_grad()
    def rollout(self, z_hist: torch.Tensor, actions: torch.Tensor, past_actions=None) -> torch.Tensor:
        """`actions (B, [S,] H, frameskip*A)` from each live env's current state -> encoded frames at the end of
        each block `(B, [S,] H, N, D)`. `z_hist` and `past_actions` are not needed: the state holds the past."""
        single = actions.dim() == 3
        blocks = actions[:, None] if single else actions
        b, s, h, _ = blocks.shape
        if b != len(self.envs):
            raise WMError(f"the oracle plans for {len(self.envs)} envs but got {b} problems")
        fs, a = self.spec.frameskip, self.spec.action_dim
        steps = blocks.reshape(b, s, h, fs, a).float().cpu().numpy()
        size = self.spec.image_size
        rgb = np.empty((b, s, h, size, size, 3), np.uint8) if self.features is None else None
        looks = []  # proprio (with frames) or features, per block, problem-major
        for i, env in enumerate(self.envs):
            start = env.get_state()
            for j in range(s):
                self.sim.set_state(start)
                for k in range(h):
                    for t in range(fs):
                        self.sim.advance(steps[i, j, k, t])
                    if self.features is not None:
                        looks.append(self.features(self.sim))
                        continue
                    obs = self.sim.observe()
                    rgb[i, j, k] = obs["rgb"]
                    looks.append(obs["proprio"])
        looks = np.asarray(looks, np.float32)
        if self.features is not None:
            z = torch.from_numpy(looks).to(self.device).reshape(b, s, h, 1, looks.shape[-1])
            return z[:, 0] if single else z
        flat_rgb, flat_p = rgb.reshape(-1, 1, size, size, 3), looks[:, None]
        z = torch.cat([
            self.model.encode({"rgb": torch.from_numpy(flat_rgb[i : i + self.chunk]).to(self.device),
                               "proprio": torch.from_numpy(flat_p[i : i + self.chunk]).to(self.device)})
            for i in range(0, len(flat_rgb), self.chunk)
        ])  # fmt: skip
        z = z.reshape(b, s, h, *z.shape[-2:])
        return z[:, 0] if single else z


class PooledPixels(torch.nn.Module):
    """A representation with nothing visual learned, for the oracle: each frame average-pooled to `side` x `side`
    pixels, each pooled pixel a token of its 3 colours in [-1, 1], beside `model`'s proprio embedding (as its own
    latents carry it). Meets what `SimulatorWorldModel` and the MPC need of a model (`spec`, `encode`); the objective
    is then the squared colour difference to the goal image at that resolution."""

    def __init__(self, model, side: int = 16):
        from dataclasses import replace

        super().__init__()
        self.model, self.side = model, side
        spec = model.spec
        self.spec = replace(spec, tokens=side * side, visual_dim=3, latent_dim=3 + spec.latent_dim - spec.visual_dim)
        self.can_decode = False

    def encode(self, obs: dict) -> torch.Tensor:
        """`{"rgb": (B, T, H, W, 3) uint8, "proprio": (B, T, P)}` -> `(B, T, side^2, 3 + Dp)`."""
        rgb = obs["rgb"]
        b, t = rgb.shape[:2]
        images = rgb.reshape(b * t, *rgb.shape[2:]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        pooled = torch.nn.functional.adaptive_avg_pool2d(images, self.side).flatten(2).transpose(1, 2)
        visual = pooled.reshape(b, t, self.side * self.side, 3)
        if self.spec.proprio_dim == 0:
            return visual
        proprio = self.model.embed_proprio(obs["proprio"])[:, :, :1]  # (B, T, 1, Dp)
        return torch.cat([visual, proprio.expand(-1, -1, self.side * self.side, -1)], dim=-1)


class FeatureGoalController:
    """An MPC controller on a `features` oracle, steered toward ground-truth goal features `goals (B, F)` (the
    goal latent the controller would otherwise encode from the goal image): a `Controller` (`envs.controller`)."""

    def __init__(self, mpc, goals: np.ndarray):
        self.mpc, self.goals = mpc, torch.as_tensor(np.asarray(goals, np.float32))

    def reset(self, goal_obs: dict) -> None:
        self.mpc.reset(goal_obs)
        self.mpc.z_goal = self.goals[:, None].to(self.mpc.device)  # (B, 1, F)

    def act(self, obs: dict) -> torch.Tensor:
        return self.mpc.act(obs)

    def executed(self, step: int, obs: dict, sent) -> None:
        self.mpc.executed(step, obs, sent)

    @property
    def latencies(self) -> list[float]:
        return self.mpc.latencies
