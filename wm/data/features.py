"""The feature cache: frozen-encoder features computed once per frame and stored (fp16) beside the frames.

Stored at `features/<encoder_id>` in the episode store, `(N_frames, N, D)`, where the encoder id names the
encoder, input resolution, pooling and weights hash, so features of different encoders never mix. Rows are
filled in order and `attrs["rows_done"]` advances after each written batch: an interrupted fill resumes, and
episodes appended later are encoded on the next call.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from wm.data.store import EpisodeStore


@torch.no_grad()
def ensure_feature_cache(store_path, encoder: torch.nn.Module, batch_size: int = 64, device="cpu") -> str:
    """Encode every frame not yet cached with `encoder` (`(B, 3, H, W)` in [0, 1] -> `(B, N, D)`).

    Returns the key (`features/<encoder_id>`) to read the cache with.
    """
    name = encoder.encoder_id
    with EpisodeStore.open(store_path, mode="a") as store:
        attrs = {"encoder_id": name, "weights_sha256": getattr(encoder, "weights_sha256", None)}
        arr = store.feature_cache(name, (encoder.num_tokens, encoder.dim), attrs)
        done = min(int(arr.attrs.get("rows_done", 0)), arr.shape[0])
        total = store.num_frames
        if done < total:
            arr.resize((total, *arr.shape[1:]))
            encoder = encoder.to(device).eval()
            for start in tqdm(range(done, total, batch_size), desc=f"cache {name}", unit="batch"):
                stop = min(start + batch_size, total)
                rgb = torch.from_numpy(store.read("rgb", start, stop)).to(device)
                feats = encoder(rgb.permute(0, 3, 1, 2).float() / 255.0)
                arr[start:stop] = feats.to(torch.float16).cpu().numpy()
                arr.attrs.update({"rows_done": stop})
    return f"features/{name}"
