"""The detector families: SRM/DCT streams against NumPy references, early/late fusion and the mask head on a
CNN and a ViT, the mask loss and overlay, and the combinations that are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import fft, ndimage
from torch import nn

from deepfake.config import Config, to_config
from deepfake.errors import ConfigError
from deepfake.model.detector import get_model
from deepfake.model.fusion import widen_stem
from deepfake.model.mask_head import mask_level, mask_loss, mask_overlay
from deepfake.model.streams import SRM_KERNELS, SRM_SCALES, FADFilter, SRMFilter

BACKBONES = {"cnn": "tiny", "vit": "vit_tiny_patch16_224"}
FAMILIES = [
    (["rgb", "srm"], "early", False),
    (["rgb", "dct"], "early", False),
    (["rgb", "srm", "dct"], "early", False),
    (["rgb", "srm", "dct"], "late", False),
    (["rgb"], "early", True),
    (["rgb", "srm"], "early", True),
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_srm_filter_matches_a_numpy_correlation() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (3, 12, 12)).astype(np.float32)
    expected = np.stack(
        [
            sum(ndimage.correlate(image[c], np.array(k) / s, mode="constant") for c in range(3))
            for k, s in zip(SRM_KERNELS, SRM_SCALES, strict=True)
        ]
    ).clip(-3, 3)
    got = SRMFilter()(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (np.abs(expected) == 3).any()  # the truncation was exercised


def test_dct_bands_match_scipy_and_sum_of_exclusive_bands_is_the_image() -> None:
    rng = np.random.default_rng(1)
    size = 16
    image = rng.normal(0, 1, (3, size, size))
    freq = fft.dctn(image, norm="ortho", axes=(-2, -1))
    s = np.add.outer(np.arange(size), np.arange(size))
    limits = ((0, size // 2.82), (size // 2.82, size // 2), (size // 2, size * 2), (0, size * 2))
    expected = np.concatenate(
        [fft.idctn(freq * ((s >= lo) & (s <= hi)), norm="ortho", axes=(-2, -1)) for lo, hi in limits]
    )
    got = FADFilter()(torch.from_numpy(image).float()[None])[0].double().numpy()
    assert got.shape == (12, size, size)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got[9:], image, atol=1e-4)  # the "all" band is the image itself


def test_filters_run_in_fp32_under_bf16_autocast() -> None:
    x = torch.randn(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert SRMFilter()(x).dtype == torch.float32
        assert FADFilter()(x.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize(("streams", "fusion", "mask"), FAMILIES)
def test_each_family_builds_and_runs_forward_and_backward(
    kind: str, streams: list[str], fusion: str, mask: bool
) -> None:
    torch.manual_seed(0)
    model = get_model(BACKBONES[kind], img_size=32, streams=streams, fusion=fusion, mask_head=mask).train()
    x = torch.randint(0, 256, (2, 4 if mask else 3, 32, 32), dtype=torch.uint8)
    out = model(x)
    logits, masks = out if mask else (out, None)
    assert logits.shape == (2,)
    loss = logits.sum()
    if mask:
        assert masks.shape == (2, 1, 2, 2)  # stride 16: test_resnet's layer3, the ViT's 16 px patches
        assert model.predict_mask(x).shape == (2, 1, 32, 32)
        loss = loss + masks.sum()
    loss.backward()
    stems = [p for n, p in model.named_parameters() if ".stems." in n]
    assert len(stems) == 2 * (len(streams) - 1)  # each extra stream has its own stem (BatchNorm)
    assert all(p.grad is not None for p in stems)
    model.eval()
    assert model(x[:, :3]).shape == (2,)  # evaluation batches carry no mask


@pytest.mark.parametrize("kind", BACKBONES)
def test_early_fusion_starts_as_the_rgb_model(kind: str) -> None:
    """The widened first conv keeps the RGB weights and gives the new channels zero weight."""
    torch.manual_seed(0)
    plain = get_model(BACKBONES[kind], img_size=32).eval()
    torch.manual_seed(0)
    fused = get_model(BACKBONES[kind], img_size=32, streams=["rgb", "srm", "dct"]).eval()
    fused.head.load_state_dict(plain.head.state_dict())
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(fused(x), plain(x))


def test_late_fusion_concatenates_one_backbone_per_stream() -> None:
    model = get_model("tiny", img_size=32, streams=["rgb", "srm", "dct"], fusion="late")
    assert len(model.backbone.backbones) == 3
    assert model.head[1].in_features == 3 * model.backbone.backbones[0].num_features
    convs = [b.conv1[0].in_channels for b in model.backbone.backbones]
    assert convs == [3, 3, 12]


def test_refused_combinations_name_both_options() -> None:
    with pytest.raises(ConfigError, match=r"model.mask_head=true .*model.fusion=late"):
        get_model("tiny", streams=["rgb", "srm"], fusion="late", mask_head=True)
    with pytest.raises(ConfigError, match=r"model.streams=\['srm'\].*rgb first"):
        get_model("tiny", streams=["srm"])
    with pytest.raises(ConfigError, match=r"model.streams=\['rgb', 'noise'\]"):
        get_model("tiny", streams=["rgb", "noise"])
    cfg = Config()
    cfg.model.mask_head = True
    with pytest.raises(ConfigError, match=r"model.mask_head=true .*data.fake_synthesis=none"):
        to_config(cfg)
    cfg.data.fake_synthesis, cfg.model.streams, cfg.model.fusion = "sbi", ["rgb", "dct"], "late"
    with pytest.raises(ConfigError, match=r"model.mask_head=true .*model.fusion=late"):
        to_config(cfg)  # refused by the config, before a run directory exists
    cfg.model.mask_head, cfg.model.streams = False, ["rgb", "dct", "dct"]
    with pytest.raises(ConfigError, match=r"model.streams=\['rgb', 'dct', 'dct'\]"):
        to_config(cfg)


def test_a_backbone_without_a_first_convolution_is_refused_for_streams() -> None:
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pretrained_cfg = {"first_conv": "proj", "architecture": "linear_net"}
            self.proj = nn.Linear(3, 3)

    with pytest.raises(ConfigError, match=r"model.streams needs .*linear_net has none"):
        widen_stem(Linear(), 6, rgb_first=True)


def test_a_backbone_without_a_feature_map_is_refused_for_the_mask_head() -> None:
    class Pooled(nn.Module):
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    with pytest.raises(ConfigError, match=r"model.mask_head=true .*model.architecture=pooled_net has none"):
        mask_level(Pooled(), "pooled_net", 32)


def test_mask_loss_skips_unknown_masks_and_matches_bce() -> None:
    logits = torch.tensor([0.5, -1.0, 3.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    target = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    target[0, :, :2] = 254  # a known half mask
    target[2] = 255  # unknown: a real forgery dataset's fake
    half = torch.tensor([[1.0] * 4] * 2 + [[0.0] * 4] * 2)
    bce0 = torch.nn.functional.binary_cross_entropy_with_logits(torch.full((4, 4), 0.5), half)
    bce1 = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(-1.0), torch.tensor(0.0))
    torch.testing.assert_close(mask_loss(logits, target, "bce"), (bce0 + bce1) / 2)
    only_unknown = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    assert mask_loss(logits[:1], only_unknown, "dice").item() == 0.0
    perfect = torch.full((1, 1, 2, 2), 20.0)
    assert mask_loss(perfect, torch.full((1, 1, 4, 4), 254, dtype=torch.uint8), "dice").item() < 1e-3


def test_mask_overlay_tints_only_the_masked_pixels() -> None:
    crop = np.full((8, 8, 3), 100, dtype=np.uint8)
    mask = np.zeros((8, 8))
    mask[:4] = 1.0
    out = mask_overlay(crop, mask)
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert (out[6:] == 100).all()
    assert (out[:2, :, 0] == 178).all() and (out[:2, :, 1] == 50).all()
