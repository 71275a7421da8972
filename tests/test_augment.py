"""Each augmentation does what its config says, keeps shape and dtype, and touches the train split only."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from deepfake.config import validate
from deepfake.data import DataModule
from deepfake.data.augment import FaceCrop, build_augment
from deepfake.data.decode import decode_file
from deepfake.errors import ConfigError
from deepfake.perturbations.image import color_saturation, gaussian_blur

SIZE = 32
ALL_ON = {
    name: {"enabled": True}
    for name in ("color_jitter", "grayscale", "blur", "downscale", "noise", "jpeg", "cutout")
}


def pattern() -> torch.Tensor:
    """A colourful 1-pixel checkerboard in mid-range values: every op leaves a measurable trace."""
    y, x = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    board = ((x + y) % 2).to(torch.uint8)
    return torch.stack([60 + 100 * board, 90 + 60 * board, 120 + 20 * board]) + (x // 4).to(torch.uint8)


def only(**options: object) -> dict:
    return {"crop": False, "hflip": False, **options}


def apply(options: dict, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    out = build_augment(SIZE, options)(pattern())
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.uint8
    return out


def variation(img: torch.Tensor) -> float:
    """Mean absolute difference between horizontal neighbours: high for sharp detail."""
    x = img.float()
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


def test_pipeline_with_everything_off_is_the_identity() -> None:
    assert torch.equal(apply(only()), pattern())


def test_random_resized_crop_zooms_into_the_face() -> None:
    out = apply(only(crop=True, crop_scale=[0.25, 0.25]))
    assert variation(out) < 0.75 * variation(pattern())


def test_flip_mirrors_half_the_time() -> None:
    outs = [apply(only(hflip=True), seed) for seed in range(12)]
    flipped = [torch.equal(o, pattern().flip(-1)) for o in outs]
    assert all(f or torch.equal(o, pattern()) for f, o in zip(flipped, outs, strict=True))
    assert 0 < sum(flipped) < len(outs)


def test_color_jitter_shifts_colours() -> None:
    c = {"enabled": True, "p": 1.0, "brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.2}
    out = apply(only(color_jitter=c))
    assert (out.float().mean((1, 2)) - pattern().float().mean((1, 2))).abs().max() > 3


def test_grayscale_equalises_channels() -> None:
    out = apply(only(grayscale={"enabled": True, "p": 1.0}))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert not torch.equal(pattern()[0], pattern()[1])


def test_blur_and_downscale_remove_detail() -> None:
    blurred = apply(only(blur={"enabled": True, "p": 1.0, "sigma": [2.0, 2.0]}))
    down = apply(only(downscale={"enabled": True, "p": 1.0, "scale": [0.25, 0.25]}))
    assert variation(blurred) < 0.2 * variation(pattern())
    assert variation(down) < 0.3 * variation(pattern())


def test_noise_has_the_configured_strength() -> None:
    out = apply(only(noise={"enabled": True, "p": 1.0, "sigma": [10.0, 10.0]}))
    diff = out.float() - pattern().float()
    assert 8.0 < float(diff.std()) < 12.0 and abs(float(diff.mean())) < 1.0


def test_jpeg_recompresses_at_the_drawn_quality() -> None:
    out = apply(only(jpeg={"enabled": True, "p": 1.0, "quality": [10, 10]}))
    assert torch.equal(out, TF.jpeg(pattern(), quality=10))
    assert 2.0 < float((out.float() - pattern().float()).abs().mean()) < 60.0


def test_cutout_erases_a_patch_of_the_configured_area() -> None:
    out = apply(only(cutout={"enabled": True, "p": 1.0, "scale": [0.1, 0.1]}))
    erased = (out == 0).all(0)
    assert 0.07 * SIZE * SIZE <= int(erased.sum()) <= 0.13 * SIZE * SIZE
    assert not (pattern() == 0).all(0).any()


def test_probability_zero_keeps_the_image() -> None:
    options = only(**{k: {"enabled": True, "p": 0.0} for k in ALL_ON})
    assert torch.equal(apply(options), pattern())


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data.augment.jpeg.quality must be \[low, high\]"):
        build_augment(SIZE, {"jpeg": {"enabled": True, "quality": [90, 10]}})
    with pytest.raises(ConfigError, match=r"unknown data.augment key\(s\) sharpen"):
        build_augment(SIZE, {"sharpen": True})


def test_augmentations_apply_to_the_train_split_only(folder_dataset: Path) -> None:
    augment = {**ALL_ON, "noise": {"enabled": True, "p": 1.0}}
    dm = DataModule(kind="folder", root=str(folder_dataset), img_size=24, num_workers=0, augment=augment)
    dm.setup()
    val, train = dm.dataset("val"), dm.dataset("train")
    for i in range(len(val)):
        image, _, _ = val[(i, 3)]
        assert torch.equal(image, decode_file(val.samples[i].path, 24))
    changed = [not torch.equal(train[(i, 0)][0], decode_file(train.samples[i].path, 24)) for i in range(8)]
    assert all(changed)
    a, b = train[(5, 1)][0], train[(5, 1)][0]
    assert torch.equal(a, b) and not torch.equal(a, train[(5, 2)][0])  # seeded by (seed, epoch, index)
    assert np.array_equal(train.labels, [s.label for s in train.samples])


def test_noise_does_not_depend_on_the_memory_layout() -> None:
    """Decoded images arrive planar, cached ones channels-last: one seed must give one result for both."""
    options = only(noise={"enabled": True, "p": 1.0})
    layout = pattern().unsqueeze(0).contiguous(memory_format=torch.channels_last)[0]
    torch.manual_seed(4)
    channels_last = build_augment(SIZE, options)(layout)
    assert torch.equal(channels_last, apply(options, seed=4))


def test_face_crop_samples_torchvisions_boxes_and_falls_back_to_the_centre() -> None:
    crop = FaceCrop(SIZE, scale=(0.5, 0.9), flip=True, ratio=(0.8, 1.25))
    torch.manual_seed(0)
    boxes = [crop.box(60, 80) for _ in range(300)]
    for b in boxes:
        assert 0 <= b["top"] <= 60 - b["height"] and 0 <= b["left"] <= 80 - b["width"]
        assert 0.45 <= b["height"] * b["width"] / (60 * 80) <= 0.95  # the scale range, up to rounding
        assert 0.75 <= b["width"] / b["height"] <= 1.3
    assert 0.3 < np.mean([b["flip"] for b in boxes]) < 0.7
    # A strip no near-square box fits: the centred fallback, trimmed to the widest allowed ratio.
    assert crop.box(10, 100) | {"flip": False} == {
        "top": 0,
        "left": 44,
        "height": 10,
        "width": 12,
        "flip": False,
    }


def test_face_crop_fast_path_equals_the_v2_path() -> None:
    crop = FaceCrop(SIZE, scale=(0.3, 0.6), flip=True)
    for seed in range(6):
        torch.manual_seed(seed)
        fast = crop(pattern())
        torch.manual_seed(seed)
        image, boxes = crop(tv_tensors.Image(pattern()), tv_tensors.BoundingBoxes([[0, 0, 8, 8]], format="XYXY",
                                                                                 canvas_size=(SIZE, SIZE)))  # fmt: skip
        assert torch.equal(fast, image.as_subclass(torch.Tensor)) and boxes.canvas_size == (SIZE, SIZE)


def perturbed(types: list[str], levels: list[int], seed: int) -> torch.Tensor:
    return apply(only(perturb={"enabled": True, "p": 1.0, "types": types, "levels": levels}), seed)


def test_perturb_applies_a_protocol_perturbation_drawn_per_sample() -> None:
    """DeeperForensics' `--type random --level random`: one (type, level) per sample, from torch's seed."""
    hwc = pattern().permute(1, 2, 0).numpy()
    dark = perturbed(["CC"], [5], seed=0)
    assert torch.equal(
        dark, torch.from_numpy((hwc.astype(np.float32) * 0.35).astype(np.uint8)).permute(2, 0, 1)
    )
    grey = torch.from_numpy(color_saturation(hwc, 0.0)).permute(2, 0, 1)
    blurred = torch.from_numpy(gaussian_blur(hwc, 21)).permute(2, 0, 1)
    outs = [perturbed(["CS", "GB"], [5], seed) for seed in range(10)]
    kinds = ["CS" if torch.equal(o, grey) else "GB" if torch.equal(o, blurred) else "?" for o in outs]
    assert "?" not in kinds and {"CS", "GB"} == set(kinds)
    assert torch.equal(perturbed(["GNC", "VC"], [1, 5], 3), perturbed(["GNC", "VC"], [1, 5], 3))


def test_perturb_keys_are_checked(compose_cfg) -> None:
    cfg = compose_cfg(["data.augment.perturb.enabled=true", "data.augment.perturb.types=[GB,blur]"])
    with pytest.raises(ConfigError, match=r"data\.augment\.perturb\.types holds unknown type\(s\) blur"):
        validate(cfg)
    cfg = compose_cfg(["data.augment.perturb.enabled=true", "data.decode=gpu"])
    with pytest.raises(ConfigError, match=r"data\.augment\.perturb runs on the CPU .* use data\.decode=cpu"):
        validate(cfg)
