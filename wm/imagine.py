"""Imagination as an environment: `ImaginedVectorEnv`, a gymnasium `VectorEnv` whose dynamics are a frozen world
model, so that any RL library that takes a vector env can train a policy without touching the real system.

- `reset` draws, per env, a start history (`num_hist` real frames `frameskip` apart with the action blocks between
  them) and a goal from a store (`StoreStarts`): a hindsight goal 1..k blocks ahead in the same episode, a user's
  goal images, or fixed start/goal pairs (for evaluation).
- `step(actions (num_envs, frameskip * A))` advances every env by one world-model block with the model's
  step-by-step rollout (`imagine_step`: the history is encoded once, into a KV cache for the latent models).
- Observations are `{"latents": (history, N, D), "goal": (N, D)}` (float32, the newest frame last); `render()`
  decodes the newest frames `(num_envs, H, W, 3)` uint8 for looking.
- Reward and `terminated` come from the model's frozen success head on the newest latents and the goal:
  `reward="success"` gives 1 when `sigmoid(logits) > threshold` (and terminates), `"probability"` gives the
  probability every step. `truncated` comes after `horizon` blocks.
- `info`: `success_prob`, `success`, `imagined_step` per env (with gymnasium's `_key` masks), and with an ensemble of
  success heads (`success_heads=5`) `success_disagreement`, the std of their probabilities: with
  `uncertainty_penalty` the reward pays `penalty * disagreement` (MOPO), so a policy is not paid for states the
  data says little about.
- Speed: `bf16=True` imagines under bfloat16 autocast (observations, rewards and the success head stay float32;
  fast on GPUs and CPUs with native bf16, slow where it is emulated); `compile=True` compiles the latent models'
  step (`compile_imagination`: seconds of compiling at the first steps). Together they make the fastest imagination
  (docs/results.md); their latents differ from float32's by bf16's rounding.
- Autoreset as gymnasium's vector envs: `NEXT_STEP` (default; the step after an episode ends returns the new
  start, reward 0) or `SAME_STEP` (the new start comes at once, the last observation in `info["final_obs"]`).
Nothing here is a real env step: `real_env_steps` is always 0, and `imagined_steps` counts env blocks imagined.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from wm.data.latent_frames import EpisodeLatents
from wm.device import bf16_autocast, module_device
from wm.errors import WMError
from wm.models.protocol import WorldModel, compile_rollouts
from wm.models.success_head import SuccessEnsemble


class StoreStarts:
    """Start histories and goals drawn from a store's episodes, encoded by `model` (`EpisodeLatents`).

    `draw(n, rng) -> (z_hist (n, num_hist, N, D), past (n, num_hist-1, fs*A), z_goal (n, N, D), sources)`.
    Goals: `goal_blocks=(lo, hi)` hindsight goals lo..hi blocks after the start (the default), or `goals`
    (`{"rgb": (G, H, W, 3), "proprio": (G, P)}` user goal observations, drawn uniformly), or `pairs` (a list of
    `(episode, t, goal_t)` used in order, cycling: fixed evaluation problems). Goal proprio velocities
    (`velocity_dims`) are zeroed. Starts never come from the last `goal_blocks[0]` blocks of an episode, so every
    hindsight goal exists; `sources` are `(episode, t, goal_t)` per draw. Latents live on `device` (default: the
    model's)."""

    def __init__(
        self,
        model: WorldModel,
        store_path,
        episodes=None,
        goal_blocks: tuple[int, int] = (1, 5),
        goals: dict | None = None,
        pairs: list[tuple[int, int, int]] | None = None,
        velocity_dims: tuple[int, ...] = (),
        device=None,
    ):
        spec = model.spec
        self.h, self.fs, self.goal_blocks = spec.num_hist, spec.frameskip, goal_blocks
        if not 1 <= goal_blocks[0] <= goal_blocks[1]:
            raise WMError(f"goal_blocks must be 1 <= lo <= hi, got {goal_blocks}")
        if pairs is not None:
            episodes = np.unique([p[0] for p in pairs])
        self.frames = EpisodeLatents(model, store_path, episodes, velocity_dims, device)
        self.spec = self.frames.spec
        self.pairs = None
        if pairs is not None:
            self.pairs = np.array([(self.frames.position[int(e)], t, g) for e, t, g in pairs], np.int64)
            if (self.pairs[:, 1] < (self.h - 1) * self.fs).any():
                raise WMError(f"every start needs {self.h} history frames: start at t >= {(self.h - 1) * self.fs}")
        self.usable = np.flatnonzero(self.frames.lengths > (self.h - 1 + goal_blocks[0]) * self.fs)
        if pairs is None and not len(self.usable):
            raise WMError(f"no episode of {store_path} is long enough for {self.h} history frames and a goal; "
                          "lower goal_blocks or collect longer episodes")  # fmt: skip
        self.user_goals = None
        if goals is not None:
            self.user_goals = self.frames.encode(goals["rgb"], goals["proprio"], goal=True)
        self.next_pair = 0

    def draw(self, n: int, rng: np.random.Generator):
        lo, hi = self.goal_blocks
        lengths, offsets = self.frames.lengths, self.frames.offsets
        if self.pairs is not None:
            pick = self.pairs[np.arange(self.next_pair, self.next_pair + n) % len(self.pairs)]
            self.next_pair += n
            pos, t, g = pick[:, 0], pick[:, 1], pick[:, 2]
        else:
            pos = self.usable[rng.integers(len(self.usable), size=n)]
            t = rng.integers((self.h - 1) * self.fs, lengths[pos] - lo * self.fs)
            g = np.minimum(t + rng.integers(lo, hi + 1, size=n) * self.fs, lengths[pos] - 1)
        base = offsets[pos] + t - (self.h - 1) * self.fs  # flat row of each history's first frame
        z_hist = self.frames.latents(base[:, None] + np.arange(self.h) * self.fs)  # (n, h, N, D)
        past = self.frames.action_blocks(base, self.h - 1, self.fs)  # (n, h-1, fs*A)
        if self.user_goals is not None:
            z_goal = self.user_goals[torch.as_tensor(rng.integers(len(self.user_goals), size=n))]
        else:
            z_goal = self.frames.latents(offsets[pos] + g, goal=True)
        episodes = self.frames.episodes
        sources = [(int(episodes[p]), int(a), int(b)) for p, a, b in zip(pos, t, g, strict=True)]
        return z_hist, past, z_goal, sources


class ImaginedVectorEnv(VectorEnv):
    """`num_envs` goal-reaching episodes imagined by `model` from `starts` (see the module docstring), on `device`
    (default: the model's)."""

    def __init__(
        self,
        model: WorldModel,
        starts: StoreStarts,
        num_envs: int = 64,
        horizon: int = 10,
        history: int = 1,
        reward: str = "success",
        threshold: float = 0.5,
        autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        device=None,
        uncertainty_penalty: float = 0.0,
        bf16: bool = False,
        compile: bool = False,
    ):
        if model.success_mode is None:
            raise WMError("imagination needs a world model with a success head (its reward); train one with "
                          "`wm train --init CK success_head=true only=success`")  # fmt: skip
        if reward not in ("success", "probability"):
            raise WMError(f"reward must be success or probability, got {reward!r}")
        if num_envs < 1 or horizon < 1 or not 1 <= history <= model.spec.num_hist:
            raise WMError(f"need num_envs >= 1, horizon >= 1 and 1 <= history <= num_hist, got {num_envs}, "
                          f"{horizon}, {history}")  # fmt: skip
        spec = model.spec
        device = device or module_device(model)
        self.model, self.starts, self.device = model, starts, device
        self.num_envs, self.horizon, self.history, self.reward_kind = num_envs, horizon, history, reward
        self.threshold, self.render_mode = threshold, render_mode
        self.ensemble = isinstance(getattr(model, "success", None), SuccessEnsemble)
        if uncertainty_penalty and not self.ensemble:
            raise WMError("an uncertainty penalty needs an ensemble of success heads; train one with `wm train --init "
                          "CK success_heads=5 only=success`")  # fmt: skip
        self.uncertainty_penalty = uncertainty_penalty  # reward -= penalty * the success heads' disagreement (MOPO)
        if compile:
            compile_rollouts(model, "imagination", "compile")
        self.bf16 = bf16
        self.metadata = {"autoreset_mode": autoreset_mode, "render_modes": ["rgb_array"]}
        action = starts.spec["action"]
        low = np.tile(np.asarray(action["low"], np.float32), spec.frameskip)
        high = np.tile(np.asarray(action["high"], np.float32), spec.frameskip)
        n, d = spec.tokens, spec.latent_dim
        self.single_observation_space = spaces.Dict(
            {
                "latents": spaces.Box(-np.inf, np.inf, (history, n, d), np.float32),
                "goal": spaces.Box(-np.inf, np.inf, (n, d), np.float32),
            }
        )
        self.single_action_space = spaces.Box(low, high, dtype=np.float32)
        self.observation_space = spaces.Dict(
            {k: spaces.Box(-np.inf, np.inf, (num_envs, *s.shape), np.float32)
             for k, s in self.single_observation_space.items()}
        )  # fmt: skip
        self.action_space = spaces.Box(np.tile(low, (num_envs, 1)), np.tile(high, (num_envs, 1)), dtype=np.float32)
        self.low, self.high = torch.as_tensor(low, device=device), torch.as_tensor(high, device=device)
        self.real_env_steps = 0  # never anything else: imagination takes no real step
        self.imagined_steps = 0  # env blocks imagined, over all envs
        self._state = None
        self._np_random = np.random.default_rng()

    # ------------------------------------------------------------------------------------------ gymnasium API
    @torch.no_grad()
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        generator = torch.Generator(self.device).manual_seed(int(self._np_random.integers(2**62)))
        z_hist, past, self.z_goal, self.sources = self.starts.draw(self.num_envs, self._np_random)
        with bf16_autocast(self.device, self.bf16):
            self._state = self.model.start_imagination(z_hist, past, generator=generator)
        self.frames = z_hist[:, -self.history :].clone()  # (E, history, N, D)
        self.steps = np.zeros(self.num_envs, np.int64)
        self.needs_reset = np.zeros(self.num_envs, bool)
        return self._obs(), {"source": list(self.sources)}

    @torch.no_grad()
    def step(self, actions):
        if self._state is None:
            raise WMError("call reset() before step()")
        actions = actions if torch.is_tensor(actions) else np.asarray(actions)  # a tensor stays where it is
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if actions.shape != (self.num_envs, self.low.shape[0]):
            raise WMError(f"actions must be (num_envs, frameskip*A) = {(self.num_envs, self.low.shape[0])}, "
                          f"got {tuple(actions.shape)}")  # fmt: skip
        actions = torch.nan_to_num(actions).clamp(self.low, self.high)
        next_step = self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        was_reset = self.needs_reset
        if was_reset.any():  # next-step autoreset: this step returns their new starts (their actions unused)
            held, z_start = self._restart(np.flatnonzero(was_reset), advance=False)
        with bf16_autocast(self.device, self.bf16):
            z_next = self.model.imagine_step(self._state, actions).float()  # (E, N, D)
        self.frames = torch.cat([self.frames[:, 1:], z_next[:, None]], dim=1)
        if was_reset.any():
            self.frames[held] = z_start[:, -self.history :]
        prob = torch.sigmoid(self.model.success_logits(z_next, self.z_goal)).cpu().numpy()
        success = prob > self.threshold
        reward = success.astype(np.float32) if self.reward_kind == "success" else prob.astype(np.float32)
        info = {"success_prob": prob, "success": success}
        if self.ensemble:
            info["success_disagreement"] = self.model.success_disagreement(z_next, self.z_goal).float().cpu().numpy()
            reward = reward - self.uncertainty_penalty * info["success_disagreement"]
        self.steps += ~was_reset
        terminated = (success if self.reward_kind == "success" else np.zeros(self.num_envs, bool)) & ~was_reset
        truncated = (self.steps >= self.horizon) & ~terminated
        reward[was_reset] = 0.0
        self.imagined_steps += int((~was_reset).sum())
        if next_step:
            self.needs_reset = terminated | truncated
        else:
            done = terminated | truncated
            if done.any():
                info["final_obs"] = self._obs()
                info["final_info"] = {k: v.copy() for k, v in info.items() if k != "final_obs"}
                index, z_start = self._restart(np.flatnonzero(done))
                self.frames[index] = z_start[:, -self.history :]
        info["imagined_step"] = self.steps.copy()  # blocks into the current episode (0: it has just started)
        info = {**info, **{f"_{k}": np.ones(self.num_envs, bool) for k in list(info)}}
        return self._obs(), reward, terminated, truncated, info

    def render(self):
        """The newest imagined frames `(num_envs, H, W, 3)` uint8 (needs a model that decodes)."""
        if not self.model.can_decode:
            raise WMError("this world model has no decoder; imagined frames cannot be shown")
        with torch.no_grad():
            frames = self.model.decode(self.frames[:, -1])
        return (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    # ------------------------------------------------------------------------------------------ internals
    def _restart(self, rows: np.ndarray, advance: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh starts and goals for the envs `rows`; returns their index and start histories `z_hist (R,
        num_hist, N, D)`. With `advance=False` the next model step returns the starts (next-step autoreset)."""
        z_hist, past, z_goal, sources = self.starts.draw(len(rows), self._np_random)
        index = torch.as_tensor(rows, device=self.device)
        self.model.restart_imagination(self._state, index, z_hist, past, advance=advance)
        self.z_goal[index] = z_goal
        self.steps[rows] = 0
        for row, source in zip(rows, sources, strict=True):
            self.sources[row] = source
        return index, z_hist

    def _obs(self) -> dict:
        return {"latents": self.frames.cpu().numpy().copy(), "goal": self.z_goal.cpu().numpy().copy()}  # not views
