"""The latent world model: an encoder, a block-causal predictor, and (for looking only) a decoder.

Two recipes (families in `wm.models.registry`) share everything but the encoder, which is passed in:
  "dino"  frozen DINOv2 patch tokens (DINO-WM); training reads them from the feature cache when present.
  "jepa"  a pixel encoder trained end to end with the predictor under SIGReg (LeWM); the offline default.
A frozen encoder's targets are detached and carry no SIGReg; a trainable one is regularised by SIGReg.

Latents `z (B, T, N, D)`: N tokens per frame, each the visual token (Dv) concatenated with a learned embedding of
proprioception (Dp, tiled over the N tokens), as in DINO-WM. Actions are the env's actions stacked over
`frameskip`: `(..., frameskip * A)`, raw (the model normalises them with statistics of its training data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from wm.errors import WMError
from wm.models.decoder import LatentDecoder
from wm.models.predictor import BlockCausalPredictor, PredictorConfig
from wm.models.protocol import ModelSpec, model_spec
from wm.models.sigreg import sigreg
from wm.models.success_head import LatentSuccessHead, SuccessEnsemble, balanced_bce
from wm.settings import require_at_least


@dataclass
class LatentWMConfig:
    kind: str = "jepa"  # "jepa" | "dino"
    image_size: int = 64  # stored frame size
    num_hist: int = 3
    num_pred: int = 1
    frameskip: int = 5
    action_dim: int = 2  # env action dims (before stacking)
    proprio_dim: int = 4
    proprio_emb_dim: int = 10  # 0 disables proprio conditioning
    encoder: dict = field(default_factory=dict)  # the encoder's settings (PixelEncoderConfig / DinoV2Encoder's)
    predictor: dict = field(default_factory=dict)  # PredictorConfig settings (dim, depth, heads, conditioning...)
    sigreg_weight: float = 0.1
    sigreg_proj: int = 256
    rollout_weight: float = 0.0  # weight of the multi-step loss over the num_pred frames
    decoder: bool = True
    decoder_width: int = 64
    decoder_batch: int = 8  # frames per step the decoder trains on (it is for looking; keep it cheap)
    success_head: bool = True  # a success head trained beside the model on detached latents (the imagined reward)
    success_goal: bool = True  # the head compares a frame with a goal latent (False: the frame alone)
    success_labels: str = "hindsight"  # "hindsight": the env judges state pairs; "recorded": the store's success
    success_width: int = 128
    success_weight: float = 1.0
    success_heads: int = 1  # >1: an ensemble of heads whose disagreement is the imagined reward's uncertainty
    success_grad: bool = False  # the success loss trains the encoder too: the latents learn what success looks at
    normalization: dict = field(default_factory=dict)  # {"action": {mean, std}, "proprio": {mean, std}} per env dim

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 1024:
            raise WMError(f"model setting image_size={self.image_size!r} must be an integer in [16, 1024]")
        require_at_least("model", 1, success_heads=self.success_heads)
        if min(self.num_hist, self.num_pred, self.frameskip) < 1:
            raise WMError(f"model settings num_hist={self.num_hist}, num_pred={self.num_pred}, frameskip="
                          f"{self.frameskip} must all be at least 1")  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


def _stats(norm: dict, key: str, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    entry = norm.get(key)
    if entry is None:
        return torch.zeros(dim), torch.ones(dim)
    return torch.tensor(entry["mean"], dtype=torch.float32), torch.tensor(entry["std"], dtype=torch.float32)


def success_head(cfg: LatentWMConfig, latent_dim: int) -> nn.Module:
    """The model's success head: one `LatentSuccessHead`, or a `SuccessEnsemble` of `cfg.success_heads`."""
    if cfg.success_heads == 1:
        return LatentSuccessHead(latent_dim, cfg.success_goal, cfg.success_width)
    return SuccessEnsemble(cfg.success_heads, latent_dim, cfg.success_goal, cfg.success_width)


class LatentWorldModel(nn.Module):
    """World-model contract: `encode(obs) -> z`, `rollout(z_hist, actions) -> z_future`, `decode(z) -> rgb`."""

    def __init__(self, cfg: LatentWMConfig, encoder: nn.Module):
        """`encoder(images (B, 3, H, W) in [0, 1]) -> (B, N, Dv)` with `num_tokens`, `dim` and `settings()`."""
        super().__init__()
        self.encoder = encoder
        self.num_tokens, self.visual_dim = self.encoder.num_tokens, self.encoder.dim
        self.proprio_proj = nn.Linear(cfg.proprio_dim, cfg.proprio_emb_dim) if cfg.proprio_emb_dim else None
        self.latent_dim = self.visual_dim + cfg.proprio_emb_dim
        pred_cfg = PredictorConfig(
            latent_dim=self.latent_dim,
            tokens_per_frame=self.num_tokens,
            action_dim=cfg.frameskip * cfg.action_dim,
            num_hist=cfg.num_hist,
            **cfg.predictor,
        )
        self.predictor = BlockCausalPredictor(pred_cfg)
        shapes = ("latent_dim", "tokens_per_frame", "action_dim", "num_hist")  # derived from the model, not settings
        predictor = {f.name: getattr(pred_cfg, f.name) for f in fields(pred_cfg) if f.name not in shapes}
        self.cfg = cfg = replace(cfg, encoder=encoder.settings(), predictor=predictor)  # every setting, recorded
        self.frozen_encoder = not any(p.requires_grad for p in encoder.parameters())
        self.decoder = (
            LatentDecoder(self.visual_dim, self.num_tokens, cfg.image_size, cfg.decoder_width) if cfg.decoder else None
        )
        self.success = success_head(cfg, self.latent_dim) if cfg.success_head else None
        a_mean, a_std = _stats(cfg.normalization, "action", cfg.action_dim)
        p_mean, p_std = _stats(cfg.normalization, "proprio", cfg.proprio_dim)
        self.register_buffer("action_mean", a_mean.repeat(cfg.frameskip))
        self.register_buffer("action_std", a_std.repeat(cfg.frameskip))
        self.register_buffer("proprio_mean", p_mean)
        self.register_buffer("proprio_std", p_std)

    # ---------------------------------------------------------------------------------- contract
    @property
    def spec(self) -> ModelSpec:
        """What planners and controllers need to know about this model."""
        proprio_dim = self.cfg.proprio_dim if self.proprio_proj is not None else 0
        return model_spec(self.cfg, self.num_tokens, self.latent_dim, self.visual_dim, proprio_dim)

    def encode_visual(self, rgb: torch.Tensor) -> torch.Tensor:
        """`rgb (B, T, H, W, 3)` uint8 -> visual tokens `(B, T, N, Dv)`."""
        b, t = rgb.shape[:2]
        images = rgb.reshape(b * t, *rgb.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
        return self.encoder(images).reshape(b, t, self.num_tokens, self.visual_dim)

    def embed_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        """`proprio (B, T, P)` -> `(B, T, N, Dp)` (normalised, embedded, tiled over tokens)."""
        p = self.proprio_proj((proprio.float() - self.proprio_mean) / self.proprio_std)
        return p.unsqueeze(2).expand(-1, -1, self.num_tokens, -1)

    def join(self, visual: torch.Tensor, proprio: torch.Tensor | None) -> torch.Tensor:
        """Visual tokens `(B, T, N, Dv)` + proprio `(B, T, P)` -> latents `(B, T, N, D)`."""
        if self.proprio_proj is None:
            return visual
        if proprio is None:
            raise WMError("this world model was trained with proprioception; pass obs['proprio']")
        return torch.cat([visual, self.embed_proprio(proprio)], dim=-1)

    def encode(self, obs: dict) -> torch.Tensor:
        """`{"rgb": (B, T, H, W, 3) uint8, "proprio": (B, T, P)}` -> `z (B, T, N, D)`."""
        return self.join(self.encode_visual(obs["rgb"]), obs.get("proprio"))

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_mean) / self.action_std

    def rollout(self, z_hist, actions, past_actions=None, use_cache: bool = True) -> torch.Tensor:
        """`z_hist (B, T, N, D)`, `actions (B, [S,] H, frameskip*A)` raw, `past_actions (B, T-1, frameskip*A)`
        -> imagined latents `(B, [S,] H, N, D)`. Differentiable w.r.t. `actions`."""
        past = None if past_actions is None else self.normalize_actions(past_actions)
        return self.predictor.rollout(z_hist, self.normalize_actions(actions), past, use_cache=use_cache)

    def start_imagination(self, z_hist: torch.Tensor, past_actions: torch.Tensor | None = None, generator=None):
        """Begin a step-by-step rollout (`imagine_step`) from `z_hist (B, T, N, D)` and the raw action blocks
        between its frames `past_actions (B, T-1, frameskip*A)` (None: zeros); the history is encoded once."""
        if past_actions is None:
            past_actions = z_hist.new_zeros(z_hist.shape[0], z_hist.shape[1] - 1, self.action_mean.shape[0])
        return self.predictor.start(z_hist[:, -self.cfg.num_hist :], self.normalize_actions(past_actions))

    def imagine_step(self, state, actions: torch.Tensor) -> torch.Tensor:
        """Advance a rollout by one block of raw actions `(B, frameskip*A)`; returns the next latents `(B, N, D)`."""
        return self.predictor.step(state, self.normalize_actions(actions))

    def compile_imagination(self) -> None:
        """Compile the predictor's rollout steps for imagination and planning (`BlockCausalPredictor.compile_steps`)."""
        self.predictor.compile_steps()

    def restart_imagination(self, state, rows, z_hist: torch.Tensor, past_actions: torch.Tensor, advance=True):
        """Replace rows `rows (R,)` of a rollout by fresh starts (`z_hist (R, num_hist, N, D)`, raw actions);
        `advance=False`: the next step returns the starts themselves (`BlockCausalPredictor.restart`)."""
        self.predictor.restart(state, rows, z_hist, self.normalize_actions(past_actions), advance)

    @property
    def can_decode(self) -> bool:
        return self.decoder is not None

    @property
    def success_mode(self) -> str | None:
        if self.success is None:
            return None
        return "goal" if self.success.goal else "frame"

    def success_logits(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor:
        """Success logits `(...)` of latents `z (..., N, D)` against goal latents `z_goal` (broadcastable to `z`);
        an ensemble's mean logit."""
        return self._success(self.success, z, z_goal)

    def success_disagreement(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor | None:
        """The standard deviation `(...)` of an ensemble's success probabilities (None with a single head)."""
        if not isinstance(self.success, SuccessEnsemble):
            return None
        return torch.sigmoid(self._success(self.success.members, z, z_goal, members=True)).std(0)

    def _success(self, head, z: torch.Tensor, z_goal: torch.Tensor | None, members: bool = False) -> torch.Tensor:
        if self.success is None:
            raise WMError("this checkpoint has no success head; train one with `wm train --init CK success_head=true`")
        if self.success.goal and z_goal is None:
            raise WMError("this success head compares frames with a goal; pass z_goal (encode the goal obs)")
        lead = z.shape[:-2]
        goal = z_goal.expand_as(z).reshape(-1, *z.shape[-2:]) if z_goal is not None else None
        logits = head(z.reshape(-1, *z.shape[-2:]), goal)
        return logits.reshape(*logits.shape[:-1], *lead) if members else logits.reshape(lead)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents `(..., N, D)` -> images `(..., H, W, 3)` float in [0, 1] (visual part only)."""
        if self.decoder is None:
            raise WMError("this checkpoint has no decoder; retrain with decoder=true to look at imagined frames")
        lead = z.shape[:-2]
        images = self.decoder(z[..., : self.visual_dim].reshape(-1, self.num_tokens, self.visual_dim))
        return images.permute(0, 2, 3, 1).reshape(*lead, *images.shape[-2:], 3)

    # -------------------------------------------------------------------------------- training
    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Training loss on a window batch: `rgb (B, n, H, W, 3)` or cached `features (B, n, N, Dv)`,
        `proprio (B, n, P)`, `action (B, n-1, frameskip*A)`. Returns `(loss, metrics)`."""
        if "features" in batch:
            visual = batch["features"].float()
        else:
            visual = self.encode_visual(batch["rgb"])
        z = self.join(visual, batch.get("proprio"))
        target = z[:, 1:]
        if self.frozen_encoder or self.proprio_proj is not None:
            # frozen features: nothing to learn in the target; proprio targets are detached as in DINO-WM
            target = torch.cat([target[..., : self.visual_dim], target[..., self.visual_dim :].detach()], dim=-1)
            if self.frozen_encoder:
                target = target.detach()
        actions = self.normalize_actions(batch["action"].float())
        pred = self.predictor(z[:, :-1], actions)
        loss_pred = F.mse_loss(pred, target)
        loss = loss_pred
        metrics = {"pred": loss_pred.detach(), "copy_last": F.mse_loss(z[:, :-1], z[:, 1:]).detach()}
        if not self.frozen_encoder and self.cfg.sigreg_weight > 0:
            reg = sigreg(visual.reshape(-1, self.visual_dim), num_proj=self.cfg.sigreg_proj)
            loss = loss + self.cfg.sigreg_weight * reg
            metrics["sigreg"] = reg.detach()
        h = self.cfg.num_hist
        if self.cfg.rollout_weight > 0 and z.shape[1] > h:
            future = self.predictor.rollout(z[:, :h], actions[:, h - 1 :], actions[:, : h - 1])
            loss_roll = F.mse_loss(future, target[:, h - 1 :])
            loss = loss + self.cfg.rollout_weight * loss_roll
            metrics["rollout"] = loss_roll.detach()
        if self.decoder is not None and "rgb" in batch:
            frames = batch["rgb"].flatten(0, 1)  # (B*n, H, W, 3)
            pick = torch.randperm(len(frames), device=frames.device)[: self.cfg.decoder_batch]
            recon = self.decode(visual.detach().flatten(0, 1)[pick])
            loss_dec = F.mse_loss(recon, frames[pick].float() / 255.0)
            loss = loss + loss_dec
            metrics["decoder"] = loss_dec.detach()
        if self.success is not None and "success" in batch:
            bce, acc = self._success_loss(z if self.cfg.success_grad else z.detach(), batch)
            loss = loss + self.cfg.success_weight * bce
            metrics["success_bce"], metrics["success_acc"] = bce.detach(), acc
        metrics["loss"] = loss.detach()
        return loss, metrics

    def _success_loss(self, z: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced BCE and accuracy of the success head on window latents `z (B, n, N, D)` against the batch's
        hindsight goal (`goal_rgb (B, H, W, 3)` or `goal_features (B, N, Dv)`, `goal_proprio (B, P)`) and
        labels `success (B, n)`; frame-only heads read no goal. The goal's encoding trains with `success_grad`."""
        z_goal = None
        if self.success.goal:
            with torch.set_grad_enabled(self.cfg.success_grad and torch.is_grad_enabled()):
                if "goal_features" in batch:
                    visual = batch["goal_features"].float()[:, None]
                else:
                    visual = self.encode_visual(batch["goal_rgb"][:, None])
                proprio = batch["goal_proprio"][:, None] if "goal_proprio" in batch else None
                z_goal = self.join(visual, proprio)  # (B, 1, N, D)
        labels = batch["success"].float()
        if isinstance(self.success, SuccessEnsemble):  # every member learns from the batch on its own
            members = self._success(self.success.members, z, z_goal, members=True)  # (E, B, n)
            bce = torch.stack([balanced_bce(m, labels) for m in members]).mean()
            return bce, ((members.mean(0) > 0).float() == labels).float().mean()
        logits = self.success_logits(z, z_goal)  # (B, n)
        return balanced_bce(logits, labels), ((logits > 0).float() == labels).float().mean()
