"""The model families, in one place: a family's name maps to its config class, model class, encoder, the store
keys its training windows read, and the settings where it departs from the config dataclasses' defaults.

A new family is one entry. Classes are named as `"module:attribute"` and imported when first used, so listing the
families costs nothing (diffusers and timm load only for the family that is built).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from torch import nn

from wm.errors import WMError


def _resolve(path: str):
    module, _, attribute = path.partition(":")
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ModelFamily:
    name: str
    summary: str
    config: str  # "module:Class" of the config dataclass (its defaults are the family's defaults...)
    model: str  # "module:Class": Class(config) or, with an encoder, Class(config, encoder)
    encoder: str | None = None  # "module:Class" with `from_config(settings: dict, image_size: int)`
    data_keys: tuple[str, ...] = ("rgb", "proprio")  # store keys of its training windows (besides `action`);
    # "features" = the frozen encoder's feature cache (wm.data.features)
    defaults: dict = field(default_factory=dict)  # (...except these; nested dicts merge into nested settings)
    nested: dict = field(default_factory=dict)  # dict setting -> "module:Class" typing its entries (`encoder.width`)

    @property
    def config_class(self) -> type:
        return _resolve(self.config)

    @property
    def nested_classes(self) -> dict[str, type]:
        """The classes whose fields type the entries of the family's dict settings (`predictor.depth=4`); entries
        of a dict setting without one are JSON values."""
        return {name: _resolve(path) for name, path in self.nested.items()}

    def make_config(self, settings: dict):
        """The config of this family with `settings` over its defaults (nested dicts merge key by key)."""
        merged = {**self.defaults, "kind": self.name}
        for key, value in settings.items():
            nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = {**merged[key], **value} if nested else value
        try:
            return self.config_class(**merged)
        except TypeError as e:
            raise WMError(f"bad {self.name} model setting: {e}") from None

    def build(self, model_cfg: dict) -> nn.Module:
        """The model a config dict (as saved in checkpoints) describes."""
        cfg = self.make_config(model_cfg)
        if self.encoder is None:
            return _resolve(self.model)(cfg)
        encoder = _resolve(self.encoder).from_config(cfg.encoder, cfg.image_size)
        return _resolve(self.model)(cfg, encoder)


PREDICTOR = "wm.models.predictor:PredictorConfig"
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily(
            "jepa",
            "LeWM: a pixel ViT trained end to end with the predictor under SIGReg (the offline default)",
            config="wm.models.latent_world_model:LatentWMConfig",
            model="wm.models.latent_world_model:LatentWorldModel",
            encoder="wm.models.pixel_encoder:PixelEncoder",
            nested={"encoder": "wm.models.pixel_encoder:PixelEncoderConfig", "predictor": PREDICTOR},
        ),
        ModelFamily(
            "dino",
            "DINO-WM: frozen DINOv2 patch tokens, read from the store's feature cache in training",
            config="wm.models.latent_world_model:LatentWMConfig",
            model="wm.models.latent_world_model:LatentWorldModel",
            encoder="wm.models.dinov2:DinoV2Encoder",
            data_keys=("rgb", "proprio", "features"),
            nested={"encoder": "wm.models.dinov2:DinoV2Encoder", "predictor": PREDICTOR},
            # CPU-sized DINO-WM: 56 px (4 x 4 patches) and DINO-WM's predictor kind (concat actions, dropout 0.1)
            defaults={
                "encoder": {"image_size": 56},
                "predictor": {"dim": 256, "heads": 8, "dropout": 0.1, "conditioning": "concat"},
            },
        ),
        ModelFamily(
            "diffusion",
            "DIAMOND / World4RL: an EDM denoiser on diffusers' UNet over pixels, with a success head",
            config="wm.models.diffusion.world_model:DiffusionWMConfig",
            model="wm.models.diffusion.world_model:DiffusionWorldModel",
        ),
    )
}


def family(kind: str | None) -> ModelFamily:
    """The family called `kind`, or a WMError listing the known ones."""
    if kind not in FAMILIES:
        raise WMError(f"unknown model family {kind!r}; use one of {', '.join(FAMILIES)} (or upgrade wm-engine)")
    return FAMILIES[kind]


def build_world_model(model_cfg: dict) -> nn.Module:
    """Instantiate the world model a config dict describes (its `"kind"` names the family)."""
    return family(model_cfg.get("kind")).build(model_cfg)
