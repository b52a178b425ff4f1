"""The pixel-space diffusion world model (DIAMOND / World4RL recipe) behind the same contract as the latent models.

Latents are the frames themselves: `z (B, T, N, 3)` with N = H*W pixel tokens of 3 channels in [-1, 1]
(`visual_dim = 3`, no proprio part), so goal objectives compare imagined and goal images pixel by pixel and
`decode` is a reshape. One world-model step predicts the frame `frameskip` env steps ahead from the last
`num_hist` frames and the action blocks between them plus the current block (each `frameskip * A` raw env
actions), by sampling EDM's probability-flow ODE in a few Euler (or Heun) steps. Rollouts are autoregressive:
each sampled frame joins the history. The sampler's noise comes from a generator seeded with `sample_seed` and
is shared by the S candidate sequences of a problem, so planners compare candidates under the same noise and a
rollout is a deterministic function of (history, actions).

With `residual=True` (the default) what is diffused is the change from the last frame, `next - last`, and the
sampled change is added back. DIAMOND diffuses the frame itself (`residual=False`); on PointMaze (a 4 px agent on a
static maze) that spends a CPU-sized budget on re-drawing the background, and a model trained that way for 25 min
beat copy-last in PSNR by erasing the agent while ignoring the actions (imagined futures under shuffled actions
differed by 5e-6 MSE); diffusing the residual puts the whole loss on the motion, which only the actions explain.

Training (`forward`): EDM's weighted denoising loss on the next frame of each window, with the conditioning frames
noise-augmented (a random std up to `cond_noise_max`, given to the network) so that the model tolerates its own
imperfect frames in long rollouts; plus a success classifier on real frames (see success_head.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from wm.errors import WMError
from wm.models.diffusion.action_encoding import ActionEncoder
from wm.models.diffusion.denoiser import Denoiser
from wm.models.diffusion.edm import EDM
from wm.models.diffusion.success_head import SuccessHead
from wm.models.protocol import ModelSpec, model_spec

UNET_DEFAULTS = {"channels": [32, 64, 64], "layers_per_block": 1, "norm_groups": 8, "patch_size": 2}


@dataclass
class DiffusionWMConfig:
    kind: str = "diffusion"
    image_size: int = 64
    num_hist: int = 3  # K conditioning frames
    num_pred: int = 1  # frames per training window after the history (each is a denoising target)
    frameskip: int = 5
    action_dim: int = 2  # env action dims (before stacking)
    proprio_dim: int = 0  # recorded from the store; the model is pixels only
    action_low: list | None = None  # env action bounds per dim (two-hot range); None: mean -/+ 3 std
    action_high: list | None = None
    action_encoding: str = "mlp"  # "mlp" | "two_hot" (World4RL; learned ~2x slower on PointMaze)
    action_bins: int = 21
    unet: dict = field(default_factory=lambda: dict(UNET_DEFAULTS))
    sigma_data: float = 0.25  # std of what is diffused: DIAMOND's 0.5 for frames; residuals are sparser
    p_mean: float = -0.4
    p_std: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    sampling_steps: int = 3
    sampler: str = "euler"  # "euler" | "heun"
    sample_seed: int = 0
    cond_noise_max: float = 0.1  # training: conditioning frames get N(0, s^2) noise, s ~ U(0, cond_noise_max)
    residual: bool = True  # diffuse the change from the last frame (False: the frame itself, as DIAMOND)
    success_head: bool = True
    success_goal: bool = True  # the head compares the frame with a goal image (False: the frame alone)
    success_labels: str = "recorded"  # the store's success vs rendered goal images; "hindsight": env-judged pairs
    success_width: int = 32
    success_weight: float = 1.0
    normalization: dict = field(default_factory=dict)  # {"action": {mean, std}} per env dim

    PER_FRAME_GOAL_IMAGES: ClassVar[bool] = True  # its head reads `goal_rgb (B, n, H, W, 3)`, a goal per frame

    def to_dict(self) -> dict:
        return asdict(self)


class PixelTokens(nn.Module):
    """The "decoder" of a pixel-space model: tokens `(..., N, 3)` in [-1, 1] <-> images."""

    def __init__(self, image_size: int):
        super().__init__()
        self.size = image_size

    def to_images(self, z: torch.Tensor) -> torch.Tensor:
        """`(..., N, 3)` -> channel-first `(..., 3, H, W)` in [-1, 1]."""
        return z.reshape(*z.shape[:-2], self.size, self.size, 3).movedim(-1, -3)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., 3, H, W)` -> `(..., N, 3)`."""
        return x.movedim(-3, -1).flatten(-3, -2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """`(..., N, 3)` -> `(..., H, W, 3)` in [0, 1]."""
        return ((z.reshape(*z.shape[:-2], self.size, self.size, 3) + 1) / 2).clamp(0, 1)


class DiffusionWorldModel(nn.Module):
    """World-model contract (`spec`, `encode`, `rollout`, `decode`) + `forward(batch)` for the shared Trainer
    + `success_logits(z, z_goal)` as a reward."""

    def __init__(self, cfg: DiffusionWMConfig):
        super().__init__()
        self.cfg = cfg
        a = cfg.action_dim
        norm = cfg.normalization.get("action", {})
        mean = torch.tensor(norm.get("mean", [0.0] * a), dtype=torch.float32)
        std = torch.tensor(norm.get("std", [1.0] * a), dtype=torch.float32)
        low = torch.tensor(cfg.action_low, dtype=torch.float32) if cfg.action_low is not None else mean - 3 * std
        high = torch.tensor(cfg.action_high, dtype=torch.float32) if cfg.action_high is not None else mean + 3 * std
        unet = {**UNET_DEFAULTS, **cfg.unet}
        self.cfg = cfg = replace(cfg, unet=unet)  # every setting, recorded
        encoder = ActionEncoder(
            cfg.action_encoding,
            cfg.num_hist * cfg.frameskip * a,
            4 * unet["channels"][0],
            low,
            high,
            mean,
            std,
            cfg.action_bins,
        )
        self.denoiser = Denoiser(cfg.image_size, cfg.num_hist, encoder, aug_scale=max(cfg.cond_noise_max, 1e-3), **unet)
        self.edm = EDM(cfg.sigma_data, cfg.p_mean, cfg.p_std, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        self.decoder = PixelTokens(cfg.image_size)
        self.success = SuccessHead(cfg.success_goal, cfg.success_width) if cfg.success_head else None

    # ---------------------------------------------------------------------------------- contract
    @property
    def spec(self) -> ModelSpec:
        """Pixel tokens: one 3-channel token per pixel, no proprio."""
        return model_spec(self.cfg, self.cfg.image_size**2, latent_dim=3, visual_dim=3, proprio_dim=0)

    def encode(self, obs: dict) -> torch.Tensor:
        """`{"rgb": (B, T, H, W, 3) uint8, ...}` -> pixel tokens `(B, T, H*W, 3)` in [-1, 1]."""
        rgb = obs["rgb"]
        return (rgb.float() / 127.5 - 1.0).flatten(-3, -2)

    @property
    def can_decode(self) -> bool:
        return True

    @property
    def success_mode(self) -> str | None:
        if self.success is None:
            return None
        return "goal" if self.success.goal else "frame"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel tokens `(..., N, 3)` -> images `(..., H, W, 3)` in [0, 1]."""
        return self.decoder(z)

    def next_frame(self, context: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One world-model step. `context (B, K, 3, H, W)` in [-1, 1], `actions (B, K*fs*A)` raw (K-1 past blocks
        then the current one), `noise (B, 3, H, W)` unit normal -> the next frame `(B, 3, H, W)` in [-1, 1]."""
        ctx = context.flatten(1, 2)
        aug = torch.zeros(len(ctx), device=ctx.device)
        net = lambda x_in, c_noise: self.denoiser(x_in, c_noise, ctx, actions, aug)  # noqa: E731
        out = self.edm.sample(net, noise, self.cfg.sampling_steps, self.cfg.sampler)
        return (out + context[:, -1] if self.cfg.residual else out).clamp(-1, 1)

    def _context(self, z_hist: torch.Tensor, past_actions: torch.Tensor | None):
        """`(frames (B, K, 3, H, W), past (B, K-1, fsA))` from a history `z_hist (B, T, N, 3)` and its action blocks
        `past_actions (B, T-1, fsA)` (None: zeros). A history shorter than `num_hist` is padded with its first frame
        (and zero actions): the agent at rest."""
        k, la = self.cfg.num_hist, self.cfg.frameskip * self.cfg.action_dim
        b, t = z_hist.shape[:2]
        frames = self.decoder.to_images(z_hist)  # (B, T, 3, H, W)
        past = past_actions if past_actions is not None else frames.new_zeros(b, t - 1, la)
        past = past[:, max(0, t - k) :].to(frames.dtype)
        frames = frames[:, -k:]
        if t < k:
            frames = torch.cat([frames[:, :1].expand(-1, k - t, -1, -1, -1), frames], dim=1)
            past = torch.cat([past.new_zeros(b, k - t, la), past], dim=1)
        return frames, past

    def rollout(self, z_hist, actions, past_actions=None, use_cache: bool = True, generator=None) -> torch.Tensor:
        """`z_hist (B, T, N, 3)`, `actions (B, [S,] H, fs*A)` raw, `past_actions (B, T-1, fs*A)` (None: zeros)
        -> imagined frames `(B, [S,] H, N, 3)`. A history shorter than `num_hist` is padded (see `_context`).
        `use_cache` is accepted for the contract (nothing to cache: each step is a fresh denoising).
        Differentiable w.r.t. `actions`."""
        k = self.cfg.num_hist
        squeeze = actions.dim() == 3
        acts = actions[:, None] if squeeze else actions  # (B, S, H, fsA)
        b, s, horizon, la = acts.shape
        frames, past = self._context(z_hist, past_actions)
        ctx = frames[:, None].expand(b, s, *frames.shape[1:]).flatten(0, 1)  # (B*S, K, 3, H, W)
        past = past[:, None].expand(b, s, k - 1, la).flatten(0, 1)  # (B*S, K-1, fsA)
        acts = acts.flatten(0, 1)  # (B*S, H, fsA)
        if generator is None:
            generator = torch.Generator(frames.device).manual_seed(self.cfg.sample_seed)
        outs = []
        for h in range(horizon):
            block = torch.cat([past, acts[:, h : h + 1]], dim=1)  # (B*S, K, fsA)
            noise = torch.randn((b, 1, *frames.shape[2:]), generator=generator, device=frames.device)
            noise = noise.expand(b, s, *frames.shape[2:]).flatten(0, 1)
            nxt = self.next_frame(ctx, block.flatten(1), noise)
            outs.append(nxt)
            ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
            past = block[:, 1:]
        z = self.decoder.to_tokens(torch.stack(outs, dim=1)).unflatten(0, (b, s))  # (B, S, H, N, 3)
        return z[:, 0] if squeeze else z

    def start_imagination(self, z_hist: torch.Tensor, past_actions: torch.Tensor | None = None, generator=None):
        """Begin a step-by-step rollout (`imagine_step`) from `z_hist (B, T, N, 3)` and its raw action blocks;
        the sampler's noise comes from `generator` (default: seeded with `sample_seed`)."""
        frames, past = self._context(z_hist, past_actions)
        if generator is None:
            generator = torch.Generator(frames.device).manual_seed(self.cfg.sample_seed)
        return {"context": frames, "past": past, "generator": generator}

    def imagine_step(self, state: dict, actions: torch.Tensor) -> torch.Tensor:
        """Advance a rollout by one block of raw actions `(B, frameskip*A)`; returns the next frame `(B, N, 3)`
        (rows restarted with `advance=False`: their start frame, without sampling)."""
        block = torch.cat([state["past"], actions[:, None].to(state["past"].dtype)], dim=1)  # (B, K, fsA)
        ctx, past, held = state["context"], state["past"], state.pop("hold", None)
        noise = torch.randn(ctx[:, -1].shape, generator=state["generator"], device=ctx.device)
        if held is None:
            nxt = self.next_frame(ctx, block.flatten(1), noise)
        else:  # a held row shows its start frame and keeps its start's context
            moving = torch.ones(len(ctx), dtype=torch.bool, device=ctx.device)
            moving[held] = False
            nxt = ctx[:, -1].clone()
            if moving.any():
                nxt[moving] = self.next_frame(ctx[moving], block[moving].flatten(1), noise[moving]).to(nxt.dtype)
        state["context"], state["past"] = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1), block[:, 1:]
        if held is not None:
            state["context"][held], state["past"][held] = ctx[held], past[held]
        return self.decoder.to_tokens(nxt)

    def restart_imagination(self, state: dict, rows, z_hist: torch.Tensor, past_actions: torch.Tensor,
                            advance: bool = True) -> None:  # fmt: skip
        """Replace rows `rows (R,)` of a rollout by fresh starts (`z_hist (R, T, N, 3)`, raw action blocks); with
        `advance=False` the next step returns their start frame instead of sampling the frame after it."""
        frames, past = self._context(z_hist, past_actions)
        state["context"], state["past"] = state["context"].clone(), state["past"].clone()
        state["context"][rows], state["past"][rows] = frames.to(state["context"].dtype), past
        rows = torch.as_tensor(rows, device=frames.device).long()
        held = state.get("hold", rows[:0])
        held = held[~torch.isin(held, rows)]
        state["hold"] = held if advance else torch.cat([held, rows])

    def success_logits(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor:
        """Success logits `(...)` of frames `z (..., N, 3)`, against goal images `z_goal` (broadcastable to `z`)
        when the head is goal-conditioned. `sigmoid(logits)` is the reward of an imagined env."""
        if self.success is None:
            raise WMError("this checkpoint has no success head; retrain with success_head=true")
        if self.success.goal and z_goal is None:
            raise WMError("this success head compares frames with a goal image; pass z_goal (encode the goal obs)")
        lead = z.shape[:-2]
        frames = self.decoder.to_images(z).reshape(-1, 3, self.cfg.image_size, self.cfg.image_size)
        goals = None
        if z_goal is not None:
            goals = self.decoder.to_images(z_goal.expand_as(z)).reshape(frames.shape)
        return self.success(frames, goals).reshape(lead)

    # -------------------------------------------------------------------------------- training
    def _windows(self, frames: torch.Tensor, actions: torch.Tensor):
        """Every target of a window batch with its context: `frames (B, n, 3, H, W)`, `actions (B, n-1, fsA)` ->
        `context (B*P, K, 3, H, W)`, `blocks (B*P, K*fsA)`, `target (B*P, 3, H, W)`, P = n - K."""
        k, n = self.cfg.num_hist, frames.shape[1]
        if n <= k:
            raise WMError(f"training windows hold {n} frames; the model needs num_hist + 1 = {k + 1} or more")
        context = torch.stack([frames[:, j - k : j] for j in range(k, n)], dim=1).flatten(0, 1)
        blocks = torch.stack([actions[:, j - k : j].flatten(1) for j in range(k, n)], dim=1).flatten(0, 1)
        return context, blocks, frames[:, k:].flatten(0, 1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Training loss on a window batch: `rgb (B, n, H, W, 3)` uint8, `action (B, n-1, fs*A)`, optionally
        `success (B, n)` and `goal_rgb (B, n, H, W, 3)` for the success head. In eval mode (validation) the
        metrics include `pred`: the MSE of a sampled next frame, comparable with `copy_last`."""
        frames = self.decoder.to_images(self.encode(batch))  # (B, n, 3, H, W)
        context, blocks, target = self._windows(frames, batch["action"].float())
        aug = torch.rand(len(context), device=frames.device) * self.cfg.cond_noise_max
        noisy_ctx = (context + aug.view(-1, 1, 1, 1, 1) * torch.randn_like(context)).flatten(1, 2)
        net = lambda x_in, c_noise: self.denoiser(x_in, c_noise, noisy_ctx, blocks, aug)  # noqa: E731
        sigma = self.edm.training_sigmas(len(target), device=frames.device)
        last = context[:, -1] if self.cfg.residual else torch.zeros_like(target)
        per_sample, denoised = self.edm.loss(net, target - last, sigma)
        denoised = denoised + last
        loss = per_sample.mean()
        metrics = {
            "diffusion": loss.detach(),
            "denoise_mse": F.mse_loss(denoised.detach(), target),
            "copy_last": F.mse_loss(context[:, -1], target),
        }
        if not self.training:
            noise = torch.randn_like(target)
            metrics["pred"] = F.mse_loss(self.next_frame(context, blocks, noise), target)
        if self.success is not None and "success" in batch and (not self.success.goal or "goal_rgb" in batch):
            goals = None
            if self.success.goal:
                goal_rgb = batch["goal_rgb"]  # (B, n, H, W, 3), or (B, H, W, 3): one hindsight goal per window
                if goal_rgb.dim() == 4:
                    goal_rgb = goal_rgb[:, None].expand(-1, frames.shape[1], -1, -1, -1)
                goals = self.decoder.to_images(self.encode({"rgb": goal_rgb})).flatten(0, 1)
            logits = self.success(frames.flatten(0, 1), goals)
            labels = batch["success"].flatten().float()
            bce = F.binary_cross_entropy_with_logits(logits, labels)
            loss = loss + self.cfg.success_weight * bce
            metrics["success_bce"] = bce.detach()
            metrics["success_acc"] = ((logits > 0).float() == labels).float().mean()
        metrics["loss"] = loss.detach()
        return loss, metrics
