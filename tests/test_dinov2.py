"""The frozen DINOv2 encoder: weight layouts (Meta / Hugging Face / timm), token shapes, freezing, helpful errors.

All weights are random and written to tmp files here; nothing touches the network. ViT-S/14 at 56 px (4x4 patches).
A DINO world model trained from such a file plans from its checkpoint alone: file deleted, network blocked.
"""

from __future__ import annotations

import json
import math

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F

from wm.errors import WMError
from wm.models import dinov2_weights
from wm.models.dinov2 import DINOV2_VARIANTS, DinoV2Encoder, load_dinov2_weights


# ---- helpers that write the three layouts from a timm state dict (pos table for 518 px = 37x37) ----
def random_timm_state(variant: str, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    """A timm DINOv2 state dict at its native 518 px with every tensor random (layer scales too)."""
    with torch.device("meta"):  # shapes only: skips timm's slow init
        model = timm.create_model(DINOV2_VARIANTS[variant], pretrained=False, num_classes=0, **kwargs)
    generator, state = torch.Generator().manual_seed(seed), {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=generator)
        state[key] = 1 + 0.1 * noise if "norm" in key and key.endswith("weight") else 0.1 * noise
    return state


def timm_to_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm -> Meta's dinov2 .pth layout: mask_token, register_tokens, CLS position inside pos_embed, ViT-g w12/w3."""
    dim, device = state["cls_token"].shape[-1], state["cls_token"].device
    swiglu = {".mlp.fc1.": ".mlp.w12.", ".mlp.fc2.": ".mlp.w3."} if dim == 1536 else {}  # ViT-g
    out = {}
    for key, value in state.items():
        for old, new in swiglu.items():
            key = key.replace(old, new)
        out[key] = value.clone()
    out["mask_token"] = torch.zeros(1, dim, device=device)
    if "reg_token" in out:  # timm folded the CLS position into cls_token; Meta keeps it in pos_embed
        out["register_tokens"] = out.pop("reg_token")
        cls_pos = torch.linspace(-0.3, 0.3, dim, device=device).view(1, 1, dim)  # not constant: LayerNorm hides that
        out["cls_token"] = out["cls_token"] - cls_pos
        out["pos_embed"] = torch.cat([cls_pos, out["pos_embed"]], dim=1)
    return out


def meta_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta -> Hugging Face Dinov2Model names (as transformers' convert_dinov2_to_hf.py renames them)."""
    out: dict[str, torch.Tensor] = {}
    dim = state["cls_token"].shape[-1]
    for key, value in state.items():
        if key.endswith(".attn.qkv.weight") or key.endswith(".attn.qkv.bias"):
            layer, kind = key.split(".")[1], key.rsplit(".", 1)[1]
            for i, part in enumerate(("query", "key", "value")):
                out[f"encoder.layer.{layer}.attention.attention.{part}.{kind}"] = value[i * dim : (i + 1) * dim]
            continue
        new = {
            "cls_token": "embeddings.cls_token",
            "mask_token": "embeddings.mask_token",
            "register_tokens": "embeddings.register_tokens",
            "pos_embed": "embeddings.position_embeddings",
            "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
            "norm.weight": "layernorm.weight",
            "norm.bias": "layernorm.bias",
        }.get(key)
        if new is None:
            new = key.replace("blocks.", "encoder.layer.", 1).replace(".attn.proj.", ".attention.output.dense.")
            new = new.replace(".ls1.gamma", ".layer_scale1.lambda1").replace(".ls2.gamma", ".layer_scale2.lambda1")
            new = new.replace(".mlp.w12.", ".mlp.weights_in.").replace(".mlp.w3.", ".mlp.weights_out.")
        out[new] = value.contiguous()
    return out


def write_layouts(tmp_path, variant: str) -> dict[str, object]:
    """The same random weights as timm .safetensors, timm .pth, Meta .pth and HF model.safetensors."""
    state = random_timm_state(variant)
    meta = timm_to_meta(state)
    paths = {
        "timm_st": tmp_path / "timm" / "weights.safetensors",
        "timm_pth": tmp_path / "timm" / "weights.pth",
        "meta": tmp_path / "meta" / f"dinov2_{variant}_random.pth",
        "hf": tmp_path / "hf" / "model.safetensors",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, paths["timm_st"])
    torch.save(state, paths["timm_pth"])
    torch.save(meta, paths["meta"])
    safetensors.torch.save_file(meta_to_hf(meta), paths["hf"])
    return paths


@pytest.fixture(scope="module")
def layout_files(tmp_path_factory):
    """variant -> the four files of `write_layouts`, written once per module."""
    written: dict[str, dict] = {}

    def get(variant: str) -> dict:
        if variant not in written:
            written[variant] = write_layouts(tmp_path_factory.mktemp(variant), variant)
        return written[variant]

    return get


@pytest.fixture(scope="module")
def vits_files(layout_files):
    return layout_files("vits14")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ViT-S forwards gain nothing from threads; on a busy 2-core box OpenMP waits turn 40 ms into 1.5 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(batch: int = 3, size: int = 56, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- layouts ----
@pytest.mark.parametrize("variant", ["vits14", "vits14_reg"])
def test_all_layouts_of_the_same_weights_give_identical_features(layout_files, variant):
    paths = layout_files(variant)
    outs = {name: DinoV2Encoder(variant, 56, use_cls=True, weights=path)(images()) for name, path in paths.items()}
    for name, out in outs.items():
        assert out.shape == (3, 17, 384) and out.dtype == torch.float32
        torch.testing.assert_close(out, outs["timm_st"], rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("variant", ["vits14", "vits14_reg"])
def test_position_table_is_resampled_like_dinov2_hub_models(layout_files, variant):
    path = layout_files(variant)["meta"]
    encoder = DinoV2Encoder(variant, 56, weights=path)
    pos = torch.load(path, weights_only=True)["pos_embed"]
    table = pos[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    if variant == "vits14":  # DINOv2's interpolate_offset 0.1, antialias off; CLS position kept
        scale = (4 + 0.1) / 37
        table = F.interpolate(table, scale_factor=(scale, scale), mode="bicubic", antialias=False)
        expected = torch.cat([pos[:, :1], table.permute(0, 2, 3, 1).reshape(1, 16, 384)], dim=1)
    else:  # register models: offset 0, antialias on; CLS position folded into the CLS token (timm no_embed_class)
        table = F.interpolate(table, size=(4, 4), mode="bicubic", antialias=True)
        expected = table.permute(0, 2, 3, 1).reshape(1, 16, 384)
    torch.testing.assert_close(encoder.model.pos_embed, expected)


def test_file_hash_is_reported_and_enters_the_encoder_id(vits_files):
    encoder = DinoV2Encoder("vits14", 56, weights=vits_files["hf"])
    assert encoder.weights_sha256 == dinov2_weights.sha256_file(vits_files["hf"])
    assert encoder.weights_sha256[:12] in encoder.encoder_id
    assert load_dinov2_weights(encoder.model, vits_files["meta"]) == dinov2_weights.sha256_file(vits_files["meta"])


def test_giant_swiglu_keys_map_from_meta_and_hf_layouts():
    with torch.device("meta"):  # shapes only, no memory
        model = timm.create_model(DINOV2_VARIANTS["vitg14_reg"], pretrained=False, num_classes=0, img_size=518)
    state = model.state_dict()
    meta = timm_to_meta(state)
    assert "blocks.39.mlp.w12.weight" in meta and meta["pos_embed"].shape == (1, 1 + 37 * 37, 1536)
    for mapped in (
        dinov2_weights._meta_to_timm(meta),
        dinov2_weights._meta_to_timm(dinov2_weights._hf_to_meta(meta_to_hf(meta))),
    ):
        assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in state.items()}


# ---- shapes, pooling, freezing ----
@pytest.mark.parametrize(
    "variant, size, pool, cls, tokens",
    [
        ("vits14", 56, None, False, 16),
        ("vits14", 56, 2, True, 5),
        ("vits14_reg", 56, None, True, 17),
        ("vits14_reg", 56, 1, False, 1),
        ("vits14", 224, 8, False, 64),
        ("vits14_reg", 224, 4, True, 17),
    ],
)
def test_token_shapes(variant, size, pool, cls, tokens):
    encoder = DinoV2Encoder(variant, size, pool=pool, use_cls=cls, weights="random")
    out = encoder(torch.rand(2, 3, 50, 70))  # any input size is resized
    assert out.shape == (2, tokens, 384) == (2, encoder.num_tokens, encoder.dim)


def test_pool_averages_the_patch_grid_and_cls_comes_first():
    full = DinoV2Encoder("vits14", 56, use_cls=True, weights="random")
    pooled = DinoV2Encoder("vits14", 56, pool=2, use_cls=True, weights="random")
    x = images()
    a, b = full(x), pooled(x)
    grid = a[:, 1:].reshape(3, 2, 2, 2, 2, 384)  # (B, row block, row, col block, col, D)
    torch.testing.assert_close(b[:, 1:], grid.mean(dim=(2, 4)).reshape(3, 4, 384))
    torch.testing.assert_close(b[:, 0], a[:, 0])


def test_encoder_is_frozen_and_stays_in_eval_mode():
    encoder = DinoV2Encoder("vits14", 56, weights="random")
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.model.training
    out = encoder(images())
    assert not out.requires_grad
    head = torch.nn.Linear(384, 1)
    head(out).sum().backward()  # outputs are plain tensors (not inference tensors): usable for training
    assert head.weight.grad is not None


def test_random_weights_are_seeded_and_normalisation_changes_the_id():
    a = DinoV2Encoder("vits14", 56, weights="random")
    b = DinoV2Encoder("vits14", 56, weights="random", normalize="half")
    assert a.weights_sha256 == "random" and a.encoder_id.endswith("random")
    torch.testing.assert_close(a.model.pos_embed, b.model.pos_embed)
    assert a.encoder_id != b.encoder_id
    assert not torch.allclose(a(images()), b(images()))
    uint8 = (images() * 255).round().to(torch.uint8)
    torch.testing.assert_close(a(uint8), a(uint8.float() / 255))


def test_all_variants_are_timm_models():
    assert all(timm.is_model(name) for name in DINOV2_VARIANTS.values())


# ---- errors ----
@pytest.mark.parametrize("layout", ["timm_pth", "hf"])
def test_truncated_file_says_re_download(tmp_path, vits_files, layout):
    data = vits_files[layout].read_bytes()
    broken = tmp_path / vits_files[layout].name
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(WMError, match=r"cannot read .*truncated or not a weights file.*re-download"):
        DinoV2Encoder("vits14", 56, weights=broken)


def test_wrong_hash_for_official_meta_file_name(tmp_path, vits_files):
    fake = tmp_path / "dinov2_vits14_pretrain.pth"
    fake.write_bytes(vits_files["meta"].read_bytes())
    with pytest.raises(WMError, match=r"not it \(sha256 \w+\.\.\., expected b938bf1bc15c\.\.\.\); re-download"):
        DinoV2Encoder("vits14", 56, weights=fake)


@pytest.mark.parametrize("folder, config", [("dinov2-small", None), ("snapshot", {"hidden_size": 384})])
def test_wrong_hash_for_file_claiming_to_be_facebook_dinov2_small(tmp_path, vits_files, folder, config):
    (tmp_path / folder).mkdir()
    fake = tmp_path / folder / "model.safetensors"
    fake.write_bytes(vits_files["hf"].read_bytes())
    if config:
        (tmp_path / folder / "config.json").write_text(json.dumps({"model_type": "dinov2", **config}))
    with pytest.raises(WMError, match=r"official facebook/dinov2-small .*expected ae1e99fcefd5"):
        DinoV2Encoder("vits14", 56, weights=fake)


def test_vit_b_file_given_to_vits14_suggests_vitb14(tmp_path):
    state = random_timm_state("vitb14", depth=1, img_size=56)  # a one-block ViT-B keeps the file small
    path = tmp_path / "vitb.pth"
    torch.save(timm_to_meta(state), path)
    with pytest.raises(WMError, match=r"does not fit DINOv2 vits14: .*shape mismatch.*seems to be for vitb14") as e:
        DinoV2Encoder("vits14", 56, weights=path)
    assert "\n" not in str(e.value)


def test_register_file_given_to_plain_variant_suggests_reg(tmp_path):
    path = tmp_path / "reg.safetensors"
    safetensors.torch.save_file(random_timm_state("vits14_reg", img_size=56), path)
    with pytest.raises(WMError, match=r"unexpected \['reg_token'\].*use variant 'vits14_reg'"):
        DinoV2Encoder("vits14", 56, weights=path)


def test_not_a_dinov2_file_and_missing_file(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WMError, match="is not a DINOv2 checkpoint"):
        DinoV2Encoder("vits14", 56, weights=path)
    with pytest.raises(WMError, match="does not exist"):
        DinoV2Encoder("vits14", 56, weights=tmp_path / "nope.pth")


@pytest.mark.parametrize("size, hint", [(100, "use 98 or 112"), (10, "use 14"), (225, "use 224 or 238")])
def test_image_size_not_multiple_of_14(size, hint):
    with pytest.raises(WMError, match=hint):
        DinoV2Encoder("vits14", size, weights="random")


def test_bad_pool_variant_normalize_and_image_layout():
    with pytest.raises(WMError, match=r"pool=3 must divide the 4x4 patch grid.*\[1, 2, 4\]"):
        DinoV2Encoder("vits14", 56, pool=3, weights="random")
    with pytest.raises(WMError, match="unknown DINOv2 variant"):
        DinoV2Encoder("vits16", 56, weights="random")
    with pytest.raises(WMError, match="unknown normalize"):
        DinoV2Encoder("vits14", 56, weights="random", normalize="clip")
    with pytest.raises(WMError, match=r"permute"):
        DinoV2Encoder("vits14", 56, weights="random")(torch.rand(1, 56, 56, 3))


def test_no_weights_offline_says_how_to_get_them(monkeypatch):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(WMError) as e:
        DinoV2Encoder("vits14", 56)
    message = str(e.value)
    assert "\n" not in message and message.startswith("no DINOv2 weights are available offline")
    for needed in (
        "--encoder-weights",
        "dinov2_vits14_pretrain.pth",
        "dl.fbaipublicfiles.com",
        "facebook/dinov2-small",
    ):
        assert needed in message


def test_pretrained_source_goes_through_the_same_mapping(monkeypatch, vits_files):
    state = safetensors.torch.load_file(vits_files["timm_st"])
    real_create = timm.create_model

    def cached_create(name, pretrained=False, **kwargs):
        model = real_create(name, pretrained=False, **kwargs)
        if pretrained:  # stands in for timm's hub download: the timm-layout weights at 518 px
            model.load_state_dict(state)
        return model

    monkeypatch.setattr(timm, "create_model", cached_create)
    hub = DinoV2Encoder("vits14", 56)
    from_file = DinoV2Encoder("vits14", 56, weights=vits_files["meta"])
    torch.testing.assert_close(hub(images()), from_file(images()), rtol=0, atol=1e-6)
    assert len(hub.weights_sha256) == 64 and not math.isnan(hub(images()).sum().item())


# ---- a DINO world model's checkpoint is self-contained ----
def test_dino_checkpoint_plans_offline_without_its_weights_file(tmp_path, vits_files, maze, monkeypatch):
    import socket

    from wm.app.cli import main
    from wm.app.train import TrainRunConfig, run_train
    from wm.models.checkpoint import load_checkpoint

    weights = tmp_path / "dinov2_vits14_random.pth"  # Meta's layout, deleted once the model is trained
    weights.write_bytes(vits_files["meta"].read_bytes())
    tiny = ["encoder.image_size=28", "predictor.dim=32", "predictor.depth=1", "predictor.heads=2", "decoder=false",
            "success_head=false", "batch_size=4", "frameskip=2", "num_hist=2", "warmup_steps=1"]  # fmt: skip
    run = tmp_path / "run"
    run_train(TrainRunConfig(str(maze), "dino", str(run), steps=2, overrides=tiny, encoder_weights=str(weights)))
    trained_id = DinoV2Encoder("vits14", 28, weights=weights).encoder_id
    weights.unlink()

    def no_network(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, config = load_checkpoint(run)  # the run folder: its model/
    assert config.model["encoder"]["weights"] == str(weights)  # where it came from, not read again
    assert model.encoder.encoder_id == trained_id  # the same features (and feature cache key) as in training
    argv = ["plan", "--checkpoint", str(run), "--env", "wm/PointMaze-v0", "--episodes", "2", "--goal-source", "random",
            "--budget", "2", "--horizon", "2", "--samples", "8", "--elites", "2", "--iterations", "1",
            "--device", "cpu", "--out", str(tmp_path / "plan")]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((tmp_path / "plan" / "results.json").read_text())["episodes"] == 2
