"""Benchmark the world models on this machine; prints one JSON object.

- training samples/s of a DINO-WM model reading the fp16 feature cache vs encoding every batch with the frozen
  DINOv2 (random ViT-S/14 weights: the cost is the same as with real ones), and of the JEPA default;
- imagined transitions/s of `rollout` at 1 problem x 300 candidate sequences x horizon 5, with and without the
  KV cache, for the JEPA default (1 token/frame) and the DINO model (patch tokens);
- the pixel diffusion default: training samples/s (success head included) and imagined frames/s at batch 32 x
  horizon 5 at 64 px (each frame one few-step sampler run).

Usage: python scripts/bench_models.py [--dino-image-size 112] [--steps 5] [--batch-size 16] [--models diffusion]
(`--models diffusion` measures the diffusion model alone; naming dino or jepa measures both latent models.)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from envs.collector import collect
from wm.data.features import ensure_feature_cache
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore
from wm.data.training_set import fill_from_store, success_training_data
from wm.data.windows import WindowConfig, WindowDataset, normalization_stats
from wm.models.registry import build_world_model, family


def make_store(path: str) -> EpisodeStore:
    keys, spec = store_layout("wm/PointMaze-v0", 64, 60)
    with EpisodeStore.create(path, keys, spec) as store:
        for episode in collect("wm/PointMaze-v0", 8, 60, policy="expert", seed=0, workers=1):
            store.append_episode(episode)
    return EpisodeStore.open(path)


def build(kind: str, store: EpisodeStore, overrides: dict):
    model_cfg = family(kind).make_config(overrides)
    model_cfg.normalization = normalization_stats(store, range(store.num_episodes))
    return build_world_model(model_cfg.to_dict())


def train_rate(model, ds: WindowDataset, steps: int, batch_size: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True)
    it = iter(loader)
    batch = next(it)
    model(batch)[0].backward()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        loss, _ = model(next(it))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return round(steps * batch_size / (time.perf_counter() - t), 2)


@torch.no_grad()
def rollout_rate(model, samples: int = 300, horizon: int = 5, repeats: int = 3) -> dict:
    model.eval()
    spec = model.spec
    z = torch.randn(1, spec.num_hist, spec.tokens, spec.latent_dim)
    past = torch.zeros(1, spec.num_hist - 1, spec.block_action_dim)
    actions = torch.rand(1, samples, horizon, spec.block_action_dim) * 2 - 1
    out = {}
    for cache in (True, False):
        model.rollout(z, actions, past, use_cache=cache)
        t = time.perf_counter()
        for _ in range(repeats):
            model.rollout(z, actions, past, use_cache=cache)
        out["with_kv_cache" if cache else "without_kv_cache"] = round(
            repeats * samples * horizon / (time.perf_counter() - t), 1
        )
    out["speedup"] = round(out["with_kv_cache"] / out["without_kv_cache"], 2)
    return out


@torch.no_grad()
def imagine_rate(model, batch: int = 32, horizon: int = 5, repeats: int = 2) -> float:
    """Imagined frames/s of a pixel model: `batch` problems x `horizon` steps from random 64 px histories."""
    model.eval()
    spec = model.spec
    rgb = torch.randint(0, 256, (batch, spec.num_hist, spec.image_size, spec.image_size, 3), dtype=torch.uint8)
    z = model.encode({"rgb": rgb})
    past = torch.zeros(batch, spec.num_hist - 1, spec.block_action_dim)
    actions = torch.rand(batch, horizon, spec.block_action_dim) * 2 - 1
    model.rollout(z, actions[:, :1], past)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        model.rollout(z, actions, past)
    return round(repeats * batch * horizon / (time.perf_counter() - t), 1)


def diffusion_bench(store: EpisodeStore, window: WindowConfig, steps: int, batch_size: int) -> dict:
    cfg = family("diffusion").make_config({})
    fill_from_store(cfg, store)
    cfg.normalization = normalization_stats(store, range(store.num_episodes))
    extra_keys, wrap = success_training_data(store, cfg)
    model = build_world_model(cfg.to_dict())
    ds = WindowDataset(store, range(store.num_episodes), window, ("rgb", *extra_keys))
    ds = wrap(ds) if wrap is not None else ds
    return {
        "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "sampler": f"{cfg.sampler}, {cfg.sampling_steps} steps",
        "train_samples_per_s": train_rate(model, ds, steps, batch_size),
        "imagined_frames_per_s_b32_64px": imagine_rate(model),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dino-image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default="dino,jepa,diffusion", help="comma-separated: dino,jepa,diffusion")
    args = parser.parse_args()
    models = set(args.models.split(","))
    torch.manual_seed(0)
    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}}
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(f"{tmp}/store")
        window = WindowConfig(3, 1, 5)
        if "diffusion" in models:
            result["diffusion_default"] = diffusion_bench(store, window, args.steps, args.batch_size)
        if not models & {"dino", "jepa"}:
            print(json.dumps(result, indent=2))
            return
        dino = build("dino", store, {"encoder": {"weights": "random", "image_size": args.dino_image_size}})
        store.close()
        cache_key = ensure_feature_cache(f"{tmp}/store", dino.encoder)
        store = EpisodeStore.open(f"{tmp}/store")
        eps = range(store.num_episodes)
        cached = WindowDataset(store, eps, window, ("proprio", cache_key), rename={cache_key: "features"})
        uncached = WindowDataset(store, eps, window, ("rgb", "proprio"))
        dino.decoder = None  # measure the world model itself; the decoder costs the same either way
        result["dino_vits14"] = {
            "image_size": args.dino_image_size,
            "tokens_per_frame": dino.num_tokens,
            "train_samples_per_s_feature_cache": train_rate(dino, cached, args.steps, args.batch_size),
            "train_samples_per_s_encoding_every_batch": train_rate(dino, uncached, args.steps, args.batch_size),
            "rollout_transitions_per_s_b300_h5": rollout_rate(dino),
        }
        cache_rate = result["dino_vits14"]["train_samples_per_s_feature_cache"]
        result["dino_vits14"]["cache_speedup"] = round(
            cache_rate / result["dino_vits14"]["train_samples_per_s_encoding_every_batch"], 2
        )
        jepa = build("jepa", store, {})
        result["jepa_default"] = {
            "params_millions": round(sum(p.numel() for p in jepa.parameters()) / 1e6, 2),
            "train_samples_per_s": train_rate(jepa, uncached, args.steps, args.batch_size),
            "rollout_transitions_per_s_b300_h5": rollout_rate(jepa),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
