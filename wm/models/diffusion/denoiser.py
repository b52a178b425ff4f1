"""The diffusion world model's network: diffusers' `UNet2DModel` over the noisy next frame stacked on channels with
the last K frames, conditioned on actions (and the conditioning frames' noise-augmentation level) through the
class embedding, which diffusers adds to the noise-level embedding and feeds to every ResNet block as a
scale-shift of its GroupNorm (`resnet_time_scale_shift="scale_shift"`: adaptive GroupNorm, as in DIAMOND).

`patch_size > 1` folds each patch x patch block of pixels into channels before the UNet (pixel unshuffle) and
unfolds the output after it: the same receptive field for a quarter of the convolution cost at patch 2, which is
what makes 64 px training practical on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

from wm.models.diffusion.action_encoding import ActionEncoder


class Denoiser(nn.Module):
    """`forward(x_in, c_noise, context, actions, aug_level) -> F`: the raw network output of EDM.

    `x_in (B, 3, H, W)` the preconditioned noisy next frame, `c_noise (B,)`, `context (B, K*3, H, W)` the K past
    frames in [-1, 1] (noise-augmented in training), `actions (B, L)` raw env actions (the K blocks: K-1 past and
    the current one, each frameskip x A), `aug_level (B,)` the std of the noise added to `context`.
    """

    def __init__(
        self,
        image_size: int,
        num_hist: int,
        action_encoder: ActionEncoder,
        channels: list[int],
        layers_per_block: int = 1,
        norm_groups: int = 8,
        patch_size: int = 2,
        aug_scale: float = 1.0,
    ):
        super().__init__()
        if image_size % (patch_size * 2 ** (len(channels) - 1)):
            raise ValueError(f"image size {image_size} must divide by patch_size * 2^(levels-1)")
        self.patch = patch_size
        self.aug_scale = aug_scale  # aug levels are divided by it before embedding (so they span ~[0, 1])
        emb_dim = 4 * channels[0]  # UNet2DModel's time-embedding width, which "identity" class embeddings must match
        p2 = patch_size**2
        self.unet = UNet2DModel(
            sample_size=image_size // patch_size,
            in_channels=3 * (num_hist + 1) * p2,
            out_channels=3 * p2,
            block_out_channels=tuple(channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            add_attention=False,
            norm_num_groups=norm_groups,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
        )
        self.action_encoder = action_encoder
        self.aug_embedding = nn.Sequential(nn.Linear(1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, x_in, c_noise, context, actions, aug_level) -> torch.Tensor:
        cond = self.action_encoder(actions) + self.aug_embedding((aug_level / self.aug_scale)[:, None])
        x = torch.cat([x_in, context], dim=1)
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        out = self.unet(x, c_noise, class_labels=cond).sample
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out
