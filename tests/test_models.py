from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from deepfake.errors import ConfigError
from deepfake.model.detector import ALIASES, DeepfakeDetector, get_model, resolve_architecture


def test_aliases_resolve_to_timm_models() -> None:
    for alias, name in ALIASES.items():
        assert timm.is_model(name), alias
    assert resolve_architecture("xception") == "legacy_xception"
    assert resolve_architecture("resnet18") == "resnet18"


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"Did you mean: .*efficientnet_b4"):
        resolve_architecture("efficientnet_b4x")


def test_detector_takes_uint8_and_returns_one_logit_per_image() -> None:
    model = get_model("tiny", dropout_rate=0.3)
    assert isinstance(model, DeepfakeDetector)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    out = model.eval()(x)
    assert out.shape == (3,)
    # uint8 and the equivalent float input in [0, 1] give the same logits.
    assert torch.allclose(out, model(x.float() / 255), atol=1e-5)
    assert model.preprocess["mean"] == pytest.approx(list(model.backbone.pretrained_cfg["mean"]))


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_swin_alias_builds_at_a_small_size() -> None:
    model = get_model("swin_transformer", img_size=64)
    assert model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1,)


def test_norm_and_bias_get_no_weight_decay() -> None:
    model = get_model("tiny")
    optimizer, scheduler = model.configure_optimizers(learning_rate=1e-3, weight_decay=0.1)
    assert scheduler is None
    by_decay = {g["weight_decay"]: g["params"] for g in optimizer.param_groups}
    assert set(by_decay) == {0.0, 0.1}
    assert all(p.ndim <= 1 for p in by_decay[0.0])
    assert all(p.ndim > 1 for p in by_decay[0.1])
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_pretrained_offline_without_weights_says_how_to_pass_a_file(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"model\.weights=/path/.*\.safetensors"):
        get_model("resnet18", pretrained=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_backbone_and_reinits_head(tmp_path: Path, suffix: str) -> None:
    source = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = get_model("tiny", weights=str(path))
    loaded = model.backbone.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    assert not any(k.startswith("fc.") for k in loaded)  # timm's classifier dropped; our head is fresh
    assert model.head[1].weight.shape == (1, model.backbone.num_features)


def test_missing_weights_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        get_model("tiny", weights=str(tmp_path / "nope.safetensors"))


def test_channels_last_batches_give_the_same_logits() -> None:
    """The loaders deliver channels-last uint8 batches; the model computes in its own layout either way."""
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for channels_last in (False, True):
        model = get_model("tiny", channels_last=channels_last).eval()
        with torch.no_grad():
            assert torch.equal(model(x.contiguous(memory_format=torch.channels_last)), model(x))


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_a_transformer_is_built_for_the_loaders_size_when_the_model_names_none() -> None:
    """`model=vit_small` on the 64 px synthetic default: a ViT built at 224 px would refuse 64 px batches."""
    from omegaconf import OmegaConf

    from deepfake.config import Config
    from deepfake.training.build import build_model

    cfg = OmegaConf.structured(Config)
    cfg.model.architecture, cfg.data.img_size = "vit_tiny_patch16_224", 32
    model = build_model(cfg)
    assert model.img_size == 32
    assert model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2,)
    cfg.model.img_size = 48  # the model's own size wins
    assert build_model(cfg).img_size == 48
