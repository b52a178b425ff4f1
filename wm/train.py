"""One training loop for every world model: AdamW, warmup + cosine, gradient clipping, progress bar, periodic
validation, crash-safe checkpoints with exact resume, bf16 autocast and torch.compile switches, DDP via torchrun.

BatchNorm statistics are re-estimated before each validation and checkpoint ("precise BN"): the running averages
BatchNorm keeps during training lag behind weights that change every step, and where the features vary little
around a drifting mean (a small ball in a large frame) that lag is larger than the variation itself. Planning and
evaluation run the model in eval mode, so without this a JEPA that trains well (batch statistics) can be worse than
copy-last in eval mode: measured on gymnasium-robotics' PointMaze, 2.5 vs 0.4 latent MSE before, 0.02 after.

The model is any `nn.Module` whose `forward(batch) -> (loss, metrics)`. Batches come from a map-style dataset
through `StepSampler`, whose order is a pure function of (seed, step), so a resumed run sees the same batches it
would have seen without the crash.

Run directory layout: `out/checkpoints/step_XXXXXXX/` (training checkpoints, the last `keep` kept),
`out/model/` (the final checkpoint, what `--checkpoint` takes; `out/policy/` for policies), `out/train_log.jsonl`
(one line per log event).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from wm import threads
from wm.device import bf16_autocast, to_device
from wm.errors import WMError
from wm.models.checkpoint import (
    latest_checkpoint,
    load_training_state,
    read_config,
    remove_stale_temporaries,
    save_checkpoint,
    truncate_log,
)
from wm.settings import require_at_least

MAX_BATCH = 65536  # windows per batch: more would not fit any machine's memory at the smallest image size


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 5e-4
    encoder_lr: float | None = None  # None: same as lr (only trainable encoders have parameters here)
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_every: int = 250
    val_batches: int = 10
    bn_batches: int = 16  # training batches that re-estimate BatchNorm statistics before validation/checkpoints
    ckpt_every: int = 250
    keep: int = 2
    log_every: int = 25
    seed: int = 0
    num_workers: int = 0
    bf16: bool = False
    compile: bool = False
    time_limit_s: float | None = None  # stop early (and checkpoint) after this much wall time
    only: str | None = None  # train these parts alone ("success", "predictor,success"); the rest stays frozen, in eval

    def __post_init__(self) -> None:
        """One-line errors for settings no run can use (they used to fail deep inside torch)."""
        require_at_least("training", 1, steps=self.steps, batch_size=self.batch_size, val_every=self.val_every,
                         val_batches=self.val_batches, ckpt_every=self.ckpt_every, keep=self.keep,
                         log_every=self.log_every)  # fmt: skip
        if self.batch_size > MAX_BATCH:
            raise WMError(f"training setting batch_size={self.batch_size} is above {MAX_BATCH}; lower it")
        if not self.lr >= 0 or (self.encoder_lr is not None and not self.encoder_lr >= 0):  # 0: nothing moves
            raise WMError(f"training settings lr={self.lr}, encoder_lr={self.encoder_lr} must not be negative")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "bn_batches", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise WMError(f"training setting {name}={getattr(self, name)} must not be negative")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise WMError(f"training setting time_limit_s={self.time_limit_s} must be positive")


class StepSampler(Sampler):
    """Indices for steps `[start_step, total_steps)` x `batch_size`, shuffled per epoch with seed + epoch.

    With `world_size > 1` each rank takes its stride of every batch (DDP sharding with identical step counts).
    """

    def __init__(self, n: int, batch_size: int, total_steps: int, seed: int, start_step: int = 0, rank=0, world=1):
        self.n, self.batch_size, self.total, self.seed = n, batch_size, total_steps, seed
        self.start, self.rank, self.world = start_step, rank, world

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        global_batch = self.batch_size * self.world
        pos = self.start * global_batch
        epoch, offset = divmod(pos, self.n)
        order = self._epoch_order(epoch)
        for _ in range(self.start, self.total):
            batch = []
            while len(batch) < global_batch:
                take = order[offset : offset + global_batch - len(batch)]
                batch.extend(take.tolist())
                offset += len(take)
                if offset >= self.n:
                    epoch, offset = epoch + 1, 0
                    order = self._epoch_order(epoch)
            yield from batch[self.rank :: self.world]

    def __len__(self) -> int:
        return (self.total - self.start) * self.batch_size


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then cosine decay to 0.05 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def batched(batch: dict) -> dict:
    """The collate step for datasets that read whole batches (`__getitems__`): nothing left to do."""
    return batch


class Trainer:
    """`Trainer(model, train_ds, val_ds, cfg, out, run_config).fit()`; `run_config` (model/data spec, JSON) is
    stored in every checkpoint so that a checkpoint alone can rebuild the model and knows its data. A run resumes
    only with the same `run_config[identity]` (what the model is); the final checkpoint goes to `out/<final>`.
    It trains on `device` (default: this rank's CUDA device when there is one, else the CPU)."""

    def __init__(self, model, train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig, out, run_config: dict,
                 final: str = "model", identity: str = "model", device: torch.device | None = None):  # fmt: skip
        self.cfg, self.out, self.run_config = cfg, Path(out), run_config
        self.final, self.identity = final, identity
        self.rank, self.world = _distributed()
        self.device = device or (
            torch.device("cuda", self.rank % torch.cuda.device_count()) if torch.cuda.is_available() else "cpu"
        )
        torch.manual_seed(cfg.seed)
        self.model = model.to(self.device)
        self.train_ds, self.val_ds = train_ds, val_ds
        if cfg.only is not None:
            self.model.requires_grad_(False)
            for part in self.trained_parts:
                part.requires_grad_(True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        enc = {id(p) for p in getattr(self.model, "encoder", torch.nn.Module()).parameters()}
        groups = [{"params": [p for p in params if id(p) not in enc], "lr": cfg.lr}]
        enc_params = [p for p in params if id(p) in enc]
        if enc_params:
            groups.append({"params": enc_params, "lr": cfg.encoder_lr or cfg.lr})
        self.base_lrs = [g["lr"] for g in groups]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.step = 0
        self.forward = self.model
        if self.world > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.forward = torch.compile(self.forward)

    @property
    def trained_parts(self) -> list[torch.nn.Module]:
        """The model's parts that `only` names (comma-separated), each a one-line error unless the model has it."""
        parts = []
        for name in self.cfg.only.split(","):
            part = getattr(self.model, name.strip(), None)
            if not isinstance(part, torch.nn.Module):
                raise WMError(f"only={self.cfg.only}: the model has no part {name.strip()!r} (e.g. only=success or "
                              "only=predictor,success)")  # fmt: skip
            parts.append(part)
        return parts

    def _train_mode(self) -> None:
        """Training mode, but for frozen parts (`only`): they stay in eval (no dropout, no BatchNorm updates)."""
        self.model.train()
        if self.cfg.only is not None:
            self.model.eval()
            for part in self.trained_parts:
                part.train()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def resume(self) -> bool:
        """Load the latest training checkpoint in `out`, if there is one. Returns whether it did. What a killed run
        left is tidied: temporary checkpoint folders, and log rows past the checkpoint (they are logged again)."""
        for folder in (self.out, self.out / "checkpoints"):
            remove_stale_temporaries(folder)
        ckpt = latest_checkpoint(self.out)
        if ckpt is not None and read_config(ckpt).get(self.identity) != self.run_config.get(self.identity):
            raise WMError(f"{self.out} holds a run with another {self.identity} config; pass a new --out or the same "
                          "settings")  # fmt: skip
        if ckpt is not None:
            self.step = int(load_training_state(ckpt, self.model, self.optimizer)["step"])
        if self.is_main:
            truncate_log(self.out / "train_log.jsonl", self.step)
        return ckpt is not None

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _save(self, final: bool = False) -> None:
        if not self.is_main:
            return
        config = {**self.run_config, "train": asdict(self.cfg), "step": self.step}
        path = self.out / "checkpoints" / f"step_{self.step:07d}"
        save_checkpoint(path, self.model, config, optimizer=self.optimizer, rng=True)
        for old in sorted((self.out / "checkpoints").glob("step_*"))[: -self.cfg.keep]:
            shutil.rmtree(old, ignore_errors=True)
        if final:
            save_checkpoint(self.out / self.final, self.model, config)

    def _loader(self, ds: Dataset, steps: int, start: int, seed: int) -> DataLoader:
        """Batches of steps `[start, steps)`. The loader has its own generator: an iterator started without one
        draws its workers' base seed from the global random stream, so a resumed run (whose loader starts after
        the stream was restored) would have drawn the model's random numbers (SIGReg's projections) off by one."""
        sampler = StepSampler(len(ds), self.cfg.batch_size, steps, seed, start, self.rank, self.world)
        collate = batched if hasattr(ds, "__getitems__") else None
        return DataLoader(ds, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=self.cfg.num_workers,
                          drop_last=True, collate_fn=collate,
                          generator=torch.Generator().manual_seed(seed * 1_000_003 + start))  # fmt: skip

    @torch.no_grad()
    def recalibrate_batchnorm(self) -> None:
        """Set the running statistics of every BatchNorm being trained to their average over `bn_batches`
        training batches under the current weights (a cumulative average, not the lagging exponential one). The
        training batches and random streams are left as they were, so resumed runs stay exact."""
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        norms = [m for m in norms if m.training and m.track_running_stats]
        if not norms or self.cfg.bn_batches <= 0:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the batches below
        cuda = [self.device] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            for batch in self._loader(self.train_ds, self.cfg.bn_batches, 0, seed=self.cfg.seed + 1):
                with bf16_autocast(self.device, self.cfg.bf16):
                    self.model(to_device(batch, self.device))
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum

    @torch.no_grad()
    def validate(self) -> dict:
        if self.val_ds is None or len(self.val_ds) == 0:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        loader = self._loader(self.val_ds, self.cfg.val_batches, 0, seed=12345)
        for batch in loader:
            with bf16_autocast(self.device, self.cfg.bf16):
                _, metrics = self.model(to_device(batch, self.device))
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v) / self.cfg.val_batches
        self._train_mode()
        return {f"val_{k}": v for k, v in totals.items()}

    def fit(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        resumed_from = self.step
        self._train_mode()
        loader = self._loader(self.train_ds, cfg.steps, self.step, cfg.seed)
        started = time.time()
        last_val: dict = {}
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not self.is_main)
        for batch in loader:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * lr_factor(self.step, cfg.warmup_steps, cfg.steps)
            with bf16_autocast(self.device, cfg.bf16):
                loss, metrics = self.forward(to_device(batch, self.device))
            if not torch.isfinite(loss):
                raise WMError(f"training diverged at step {self.step} (loss {float(loss)}); lower lr or check data")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            bar.update(1)
            threads.tick()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                record = {k: round(float(v), 5) for k, v in metrics.items()}
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "pred", "copy_last")})
                self._log({"step": self.step, "grad_norm": float(grad_norm), **record})
            validate = self.step % cfg.val_every == 0 or self.step == cfg.steps
            out_of_time = cfg.time_limit_s is not None and time.time() - started > cfg.time_limit_s
            save = self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or out_of_time
            if validate or save:
                self.recalibrate_batchnorm()
            if validate:
                last_val = self.validate()
                self._log({"step": self.step, **last_val})
            if save:
                self._save(final=self.step == cfg.steps or out_of_time)
            if out_of_time:
                break
        bar.close()
        elapsed = time.time() - started
        summary = {
            "steps": self.step,
            "resumed_from": resumed_from,
            "seconds": round(elapsed, 1),
            "samples_per_second": round(
                (self.step - resumed_from) * cfg.batch_size * self.world / max(elapsed, 1e-9), 1
            ),
            **{k: round(v, 5) for k, v in last_val.items()},
            "checkpoint": str(self.out / self.final),
        }
        self._log({"summary": summary})
        return summary
