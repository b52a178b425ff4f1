"""The latent predictor shared by the DINO-WM and JEPA (LeWM) world models: a block-causal transformer over frames.

Frame t is N tokens of width D. The predictor reads frames with the action applied at each, and its output at frame
t predicts frame t+1's latent. Conditioning on the action is either `"concat"` (DINO-WM: the embedded action is
appended to every token of its frame) or `"adaln"` (LeWM: the embedded action sets per-frame LayerNorm scale/shift and
residual gates in every block, zero-initialised so each block starts as the identity).

Attention is block-causal with a sliding window applied in every layer: a token of frame t sees all tokens of frames
t-num_hist+1 .. t. Time enters only through RoPE over the frame index (a learned embedding marks the token index n
within a frame), so scores depend on frame offsets alone and a sliding-window KV cache reproduces the full-sequence
computation exactly. The receptive field of the whole stack is therefore (num_hist - 1) * depth + 1 frames, and
`rollout` starts from the last num_hist frames of the history: what the model saw during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wm.errors import WMError
from wm.models.attention import FrameKVCache, SelfAttention, fold_mask, rope_tables, window_mask

CONDITIONINGS = ("concat", "adaln")


@dataclass
class PredictorConfig:
    """Shapes and size of a `BlockCausalPredictor`.

    `latent_dim` D and `tokens_per_frame` N describe a frame `(N, D)`; `action_dim` is the raw (frameskip-stacked)
    action width; `num_hist` is the attention window in frames; `rope_base` sets the RoPE frequencies (frame offsets
    are small, so a small base spreads the channels' angular speeds over them). The defaults are the JEPA world
    model's, CPU-sized (LeWM's AdaLN conditioning); the DINO family sets its own in `wm.models.registry`.
    """

    latent_dim: int
    tokens_per_frame: int
    action_dim: int
    num_hist: int = 3
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    action_emb_dim: int = 10
    conditioning: str = "adaln"
    rope_base: float = 100.0

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise WMError(f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if self.heads < 1 or self.dim < 1:
            raise WMError(f"predictor dim={self.dim} and heads={self.heads} must be at least 1")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise WMError(f"dim {self.dim} must split into {self.heads} heads of even width (RoPE rotates pairs)")
        if min(self.latent_dim, self.tokens_per_frame, self.action_dim, self.num_hist, self.depth) < 1:
            raise WMError("latent_dim, tokens_per_frame, action_dim, num_hist and depth must all be >= 1")


class Block(nn.Module):
    """Pre-norm transformer block over frame tokens `(b, T, N, dim)`.

    With `adaln`, `cond (b, T, dim)` gives each frame a LayerNorm scale/shift and a residual gate for the attention
    and the MLP branch: `x + gate * branch(LN(x) * (1 + scale) + shift)`, from a zero-initialised linear map.
    """

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        adaln = cfg.conditioning == "adaln"
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=not adaln)
        self.attn = SelfAttention(cfg.dim, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=not adaln)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.dim),
            nn.Dropout(cfg.dropout),
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim)) if adaln else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: FrameKVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """`x (b, T, N, dim)`, `cond (b, T, dim)` or None (concat mode) -> `(b, T, N, dim)`."""
        b, t, n, d = x.shape
        if self.modulation is None:
            attn = self.attn(self.norm1(x).reshape(b, t * n, d), cos, sin, mask, cache, layer)
            x = x + attn.view(b, t, n, d)
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).unsqueeze(2).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h.reshape(b, t * n, d), cos, sin, mask, cache, layer).view(b, t, n, d)
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


@dataclass
class Imagination:
    """A step-by-step rollout in progress: the KV cache of the frames before `z`, the newest latents
    `z (B, 1, N, D)` and their frame index; `pending` restarts `(rows (R,), z_hist (R, num_hist, N, D),
    past_actions (R, num_hist-1, A))` whose history frames the next step encodes (`BlockCausalPredictor.restart`);
    `hold`: they return their start at that step instead of advancing from it."""

    cache: FrameKVCache
    z: torch.Tensor
    frame: int
    pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    hold: bool = False


class BlockCausalPredictor(nn.Module):
    """Next-frame latent predictor: frames `(B, T, N, D)` + actions `(B, T, action_dim)` -> next frames."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        self.cfg = cfg
        concat = cfg.conditioning == "concat"
        self.action_embed = nn.Linear(cfg.action_dim, cfg.action_emb_dim)
        self.input_proj = nn.Linear(cfg.latent_dim + (cfg.action_emb_dim if concat else 0), cfg.dim)
        self.cond_proj = None if concat else nn.Linear(cfg.action_emb_dim, cfg.dim)
        self.spatial_pos = nn.Parameter(0.02 * torch.randn(cfg.tokens_per_frame, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.latent_dim)
        self.step_trunk = None  # `_trunk` as `step` runs it: compiled by `compile_steps`

    def forward(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: `z (B, T, N, D)`, `actions (B, T, action_dim)` (applied at each frame) -> `(B, T, N, D)`.

        `pred[:, t]` predicts `z[:, t+1]`; it depends on frames <= t only (within the per-layer window).
        """
        self._check(z, actions, z.shape[1])
        return self.head(self.norm(self._trunk(z, actions, first_frame=0)))

    def rollout(
        self,
        z_hist: torch.Tensor,
        actions: torch.Tensor,
        past_actions: torch.Tensor | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Imagine H frames for S action sequences per problem.

        `z_hist (B, T0, N, D)` context frames (only the last num_hist are used); `past_actions (B, T0-1, action_dim)`
        applied at the history frames but the last (zeros if None); `actions (B, S, H, action_dim)`, the first
        applied at the last history frame, or `(B, H, action_dim)` for S=1. Returns `(B, S, H, N, D)` or
        `(B, H, N, D)`: frame h is the prediction after actions 0..h. With `use_cache`, history frames are encoded
        once per problem and each step runs only the N newest tokens per sample; without it, every step recomputes
        the whole imagined sequence (the reference). Differentiable in `actions` under the caller's grad mode.
        """
        single = actions.dim() == 3
        if single:
            actions = actions.unsqueeze(1)
        B, S, H, _ = actions.shape
        T0 = min(z_hist.shape[1], self.cfg.num_hist)
        z_hist = z_hist[:, z_hist.shape[1] - T0 :]
        if past_actions is None:
            past_actions = z_hist.new_zeros(B, T0 - 1, self.cfg.action_dim)
        elif past_actions.shape[1] < T0 - 1:
            raise WMError(f"past_actions has {past_actions.shape[1]} frames; the history needs {T0 - 1}")
        past_actions = past_actions[:, past_actions.shape[1] - (T0 - 1) :]
        self._check(z_hist, past_actions, T0 - 1)
        self._check(z_hist, actions[:, 0], H)
        rollout = self._rollout_cached if use_cache else self._rollout_recompute
        pred = rollout(z_hist, past_actions, actions).unflatten(0, (B, S))  # (B, S, H, N, D)
        return pred[:, 0] if single else pred

    def _rollout_cached(self, z_hist: torch.Tensor, past_actions: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """`z_hist (B, T0, N, D)`, `past_actions (B, T0-1, A)`, `actions (B, S, H, A)` -> `(B*S, H, N, D)`."""
        B, S, H, _ = actions.shape
        T0 = z_hist.shape[1]
        cache = FrameKVCache(self.cfg.depth, self.cfg.num_hist, self.cfg.tokens_per_frame, S)
        if T0 > 1:  # shared history: keys/values at batch B, broadcast over the S samples by the cache
            self._trunk(z_hist[:, :-1], past_actions, first_frame=0, cache=cache)
        z = z_hist[:, -1:].repeat_interleave(S, dim=0)  # (B*S, 1, N, D)
        actions = actions.flatten(0, 1)  # (B*S, H, A)
        preds, trunk = [], self.step_trunk or self._trunk
        for step in range(H):
            hidden = trunk(z, actions[:, step : step + 1], first_frame=T0 - 1 + step, cache=cache)
            z = self.head(self.norm(hidden))
            preds.append(z)
        return torch.cat(preds, dim=1)

    def start(self, z_hist: torch.Tensor, past_actions: torch.Tensor) -> Imagination:
        """Begin a step-by-step rollout from `z_hist (B, T, N, D)` (T <= num_hist) and the normalised actions between
        them `past_actions (B, T-1, A)`: the history is encoded into a KV cache once (frames 0 .. T-1)."""
        self._check(z_hist, past_actions, z_hist.shape[1] - 1)
        cache = FrameKVCache(self.cfg.depth, self.cfg.num_hist, self.cfg.tokens_per_frame, 1)
        if z_hist.shape[1] > 1:
            self._trunk(z_hist[:, :-1], past_actions, first_frame=0, cache=cache)
        return Imagination(cache, z_hist[:, -1:], z_hist.shape[1] - 1)

    def compile_steps(self) -> None:
        """Compile the trunk that `step` and the cached `rollout` run per step (`torch.compile`, dynamic shapes; the
        KV cache's bookkeeping stays eager). The first steps take seconds to compile (a handful of shape variants);
        imagination and planning gain, above all under bf16 autocast, whose casts the compiled kernels fuse (see
        docs/results.md)."""
        if self.step_trunk is None:
            self.step_trunk = torch.compile(self._trunk, dynamic=True)

    def step(self, state: Imagination, actions: torch.Tensor) -> torch.Tensor:
        """Advance `state` by one frame under normalised `actions (B, A)`; returns the new latents `(B, N, D)`
        (the same as `rollout` with the cache, one step at a time). Pending restarts are folded into the same trunk
        call: their history frames ride along as extra rows (`FrameKVCache.fold`), so a step with restarts costs
        one call of B + F * R rows instead of two (whose fixed per-layer cost dominated at small R). A restart that
        advances carries its F = num_hist-1 frames before its start frame; one that holds (`restart(advance=False)`)
        carries F = num_hist-2 and its own row the last frame before the start (its action unused), so that no row
        computes a frame that is thrown away."""
        z, acts, count = state.z, actions[:, None], state.z.shape[0]
        row_frames = mask = None
        keep, hold = self.cfg.num_hist - 1, state.pending is not None and state.hold
        if state.pending is not None and keep:
            rows, z_hist, past = state.pending
            first, fresh, n = int(hold), rows.shape[0], self.cfg.tokens_per_frame
            frames = keep - first  # F history frames per restart ride along
            z_hist = z_hist.to(z.dtype)  # (bf16 under autocast)
            if hold:  # a restarted row carries its last history frame (and the action after it)
                z, acts = z.index_copy(0, rows, z_hist[:, keep - 1 : keep]), acts.index_copy(0, rows, past[:, -1:])
            z = torch.cat([z, z_hist[:, :frames].transpose(0, 1).flatten(0, 1)[:, None]])  # + (F*R, 1, N, D)
            acts = torch.cat([acts, past[:, :frames].transpose(0, 1).flatten(0, 1)[:, None]])  # frame m: count+m*R..
            offsets = torch.arange(-frames, 0, device=z.device).repeat_interleave(fresh)
            row_frames = state.frame + torch.cat([offsets.new_zeros(count), offsets])  # (count + F*R,)
            mask = fold_mask(count, fresh, keep, n, first, rows, device=z.device)
            state.cache.fold(rows, count, first)
        try:
            trunk = self.step_trunk or self._trunk
            hidden = trunk(z, acts, state.frame, state.cache, row_frames=row_frames, mask=mask)[:count]
            state.z, state.frame = self.head(self.norm(hidden)), state.frame + 1
            if hold:  # the held rows show their start frame, which the next step advances from
                rows, z_hist, _ = state.pending
                state.z = state.z.index_copy(0, rows, z_hist[:, -1:].to(state.z.dtype))
        finally:
            state.cache.folding, state.pending, state.hold = None, None, False
        return state.z[:, 0]

    def restart(
        self,
        state: Imagination,
        rows: torch.Tensor,
        z_hist: torch.Tensor,
        past_actions: torch.Tensor,
        advance: bool = True,
    ) -> None:
        """Replace rows `rows (R,)` of a running `state` by fresh starts from `z_hist (R, num_hist, N, D)` and
        `past_actions (R, num_hist-1, A)`; the other rows go on undisturbed. The history frames are encoded by the
        next `step` (a restart before it of the same row replaces this one). With `advance`, the newest latents
        change at once and the next step advances from the start frame under its action; without it (gymnasium's
        next-step autoreset), the next step returns the start frame itself and ignores the rows' actions. Restarts
        of both kinds cannot wait for the same step."""
        keep = self.cfg.num_hist - 1
        if z_hist.shape[1] != self.cfg.num_hist:
            raise WMError(f"restarts need num_hist={self.cfg.num_hist} history frames, got {z_hist.shape[1]}")
        self._check(z_hist, past_actions, keep)
        if state.cache.samples != 1 or any(len(frames) != keep for frames in state.cache.frames):
            raise WMError("restart needs a running rollout that began with num_hist history frames")
        if state.pending is not None and state.hold == advance:
            raise WMError("restarts that advance and restarts that hold cannot wait for the same step; step first")
        rows = torch.as_tensor(rows, device=state.z.device).long()
        if advance:
            state.z = state.z.clone()
            state.z[rows] = z_hist[:, -1:].to(state.z.dtype)
            if keep == 0:
                return
        if state.pending is not None:
            old_rows, old_z, old_past = state.pending
            stay = ~torch.isin(old_rows, rows)
            rows = torch.cat([old_rows[stay], rows])
            z_hist, past_actions = torch.cat([old_z[stay], z_hist]), torch.cat([old_past[stay], past_actions])
        state.pending, state.hold = (rows, z_hist, past_actions), not advance

    def _rollout_recompute(
        self, z_hist: torch.Tensor, past_actions: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Reference rollout without a cache; same shapes as `_rollout_cached`."""
        S, H = actions.shape[1:3]
        T0 = z_hist.shape[1]
        z = z_hist.repeat_interleave(S, dim=0)  # (B*S, T0, N, D)
        seq_actions = torch.cat([past_actions.repeat_interleave(S, dim=0), actions.flatten(0, 1)], dim=1)
        for step in range(H):
            pred = self.forward(z, seq_actions[:, : T0 + step])[:, -1:]
            z = torch.cat([z, pred], dim=1)
        return z[:, T0:]

    def _trunk(
        self,
        z: torch.Tensor,
        actions: torch.Tensor,
        first_frame: int,
        cache: FrameKVCache | None = None,
        row_frames: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states `(b, T, N, dim)` of frames `first_frame .. first_frame+T-1` from `z (b, T, N, D)` and
        `actions (b, T, A)`; with a `cache`, the T frames also attend to (and are appended to) the cached frames.
        A folded step (T = 1) gives each row its own frame index `row_frames (b,)` and its attention `mask`."""
        b, t, n, _ = z.shape
        emb = self.action_embed(actions)  # (b, T, E)
        if self.cond_proj is None:
            x, cond = self.input_proj(torch.cat([z, emb.unsqueeze(2).expand(b, t, n, -1)], dim=-1)), None
        else:
            x, cond = self.input_proj(z), self.cond_proj(emb)
        x = x + self.spatial_pos
        head_dim = self.cfg.dim // self.cfg.heads
        if row_frames is not None:
            tables = rope_tables(row_frames.repeat_interleave(n), head_dim, self.cfg.rope_base)  # (b*N, head_dim)
            cos, sin = (table.view(b, 1, n, head_dim) for table in tables)
        else:
            frames = torch.arange(first_frame, first_frame + t, device=z.device).repeat_interleave(n)  # (T*N,)
            cos, sin = rope_tables(frames, head_dim, self.cfg.rope_base)
            mask = window_mask(frames, frames, self.cfg.num_hist) if t > 1 else None
        for layer, block in enumerate(self.blocks):
            x = block(x, cond, cos, sin, mask, cache, layer)
        return x

    def _check(self, z: torch.Tensor, actions: torch.Tensor, frames: int) -> None:
        """Raise `WMError` unless `z (B, T, N, D)` and `actions (B, frames, action_dim)` fit this predictor."""
        cfg = self.cfg
        if z.dim() != 4 or tuple(z.shape[2:]) != (cfg.tokens_per_frame, cfg.latent_dim):
            raise WMError(f"latents must be (B, T, {cfg.tokens_per_frame}, {cfg.latent_dim}), got {tuple(z.shape)}")
        expected = (z.shape[0], frames, cfg.action_dim)
        if tuple(actions.shape) != expected:
            raise WMError(f"actions must be {expected} (B, frames, action_dim), got {tuple(actions.shape)}")
