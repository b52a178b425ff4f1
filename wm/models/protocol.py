"""The world-model contract every model family meets, so any planner or controller can use any model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from wm.errors import WMError


@dataclass(frozen=True)
class ModelSpec:
    """What planners, policies and controllers need to know about a world model (`model.spec`).

    Time scales: the model steps in blocks of `frameskip` env steps; one block's actions are the env actions of its
    steps stacked, `block_action_dim = frameskip * action_dim` wide. A latent frame is `tokens` tokens of width
    `latent_dim`, whose first `visual_dim` channels are visual and the rest (`proprio_dim` > 0) proprioceptive."""

    kind: str  # the model family
    frameskip: int  # env steps per world-model block
    action_dim: int  # env action dims (A)
    num_hist: int  # history frames the model conditions on
    image_size: int  # square frames, pixels
    tokens: int  # N tokens per frame
    latent_dim: int  # D
    visual_dim: int  # the first channels of a token are visual
    proprio_dim: int  # 0: the model reads no proprio

    @property
    def block_action_dim(self) -> int:
        """Actions of one world-model block, `frameskip * action_dim`: what `rollout` takes per step."""
        return self.frameskip * self.action_dim

    @property
    def history_steps(self) -> int:
        """Env steps a full history spans before the newest frame, `(num_hist - 1) * frameskip`."""
        return (self.num_hist - 1) * self.frameskip


@runtime_checkable
class WorldModel(Protocol):
    """Shapes: B problems, S candidate sequences, T history frames, H horizon, N tokens, D latent width,
    A = frameskip * env action dims (actions are raw env actions stacked over frameskip).

    Every model encodes and rolls out. Two capabilities are optional, and say whether they are there:
    `can_decode` (imagined latents can be looked at as images) and `success_mode` (a success head scores latents
    against a goal: "goal" when it needs the goal latent, "frame" when it reads the frame alone, None without one).
    """

    @property
    def spec(self) -> ModelSpec: ...

    def encode(self, obs: dict) -> torch.Tensor:
        """`{"rgb": (B, T, H, W, 3) uint8, "proprio": (B, T, P)}` -> `z (B, T, N, D)`."""
        ...

    def rollout(self, z_hist: torch.Tensor, actions: torch.Tensor, past_actions=None) -> torch.Tensor:
        """`z_hist (B, T, N, D)`, `actions (B, [S,] H, A)`, `past_actions (B, T-1, A)` -> `(B, [S,] H, N, D)`."""
        ...

    def start_imagination(self, z_hist: torch.Tensor, past_actions=None, generator=None):
        """Begin a step-by-step rollout from `z_hist (B, T, N, D)` and `past_actions (B, T-1, A)`; an opaque state."""
        ...

    def imagine_step(self, state, actions: torch.Tensor) -> torch.Tensor:
        """Advance the rollout `state` by one block `actions (B, A)` -> next latents `(B, N, D)` (history encoded
        once, when the rollout started: a KV cache for the latent models, a frame context for the diffusion model)."""
        ...

    def restart_imagination(self, state, rows: torch.Tensor, z_hist: torch.Tensor, past_actions: torch.Tensor,
                            advance: bool = True):  # fmt: skip
        """Replace rows `rows (R,)` of the rollout by fresh starts `z_hist (R, num_hist, N, D)`, the rest untouched.
        The next `imagine_step` advances them from their start frame; with `advance=False` it returns the start
        frame itself for them, ignoring their actions (gymnasium's next-step autoreset)."""
        ...

    @property
    def can_decode(self) -> bool: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """`(..., N, D)` -> images `(..., H, W, 3)` in [0, 1] (raises WMError when `can_decode` is False)."""
        ...

    @property
    def success_mode(self) -> str | None: ...

    def success_logits(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor:
        """Success logits `(...)` of latents `z (..., N, D)` against `z_goal` (broadcastable to `z`; needed when
        `success_mode == "goal"`); `sigmoid` of it is the reward of an imagined env. Raises WMError without a head."""
        ...


def model_spec(cfg, tokens: int, latent_dim: int, visual_dim: int, proprio_dim: int) -> ModelSpec:
    """The spec of a model with config `cfg` (`kind`, `frameskip`, `action_dim` = env action dims, `num_hist`,
    `image_size`) and the given latent layout."""
    return ModelSpec(cfg.kind, cfg.frameskip, cfg.action_dim, cfg.num_hist, cfg.image_size, tokens, latent_dim,
                     visual_dim, proprio_dim)  # fmt: skip


def compile_rollouts(model, what: str, flag: str) -> None:
    """Compile `model`'s rollout steps (`compile_imagination`, the latent models'); a one-line WMError naming the
    setting `flag` for a model without them."""
    if not hasattr(model, "compile_imagination"):
        raise WMError(f"a {type(model).__name__} cannot compile its {what}; leave {flag} off")
    model.compile_imagination()
