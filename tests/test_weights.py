"""`model.weights`: a file that does not fit the backbone is refused; a project checkpoint gives its backbone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from deepfake.errors import ConfigError
from deepfake.model.detector import get_model
from deepfake.model.weights import MIN_MATCHED
from deepfake.runs.checkpoint import build_state, save_checkpoint


def random_state(name: str) -> dict[str, torch.Tensor]:
    """A timm model's state dict (with its classifier) drawn at random, so a load is visible."""
    model = timm.create_model(name, pretrained=False, num_classes=5)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def backbone_keys(name: str) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in timm.create_model(name, num_classes=0).state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_of_another_architecture_are_refused_with_the_count(tmp_path: Path, suffix: str) -> None:
    other = random_state("test_efficientnet")
    path = save(other, tmp_path / f"effnet{suffix}")
    expected = backbone_keys("test_resnet")
    matched = sum(k in other and other[k].shape == s for k, s in expected.items())
    assert matched < MIN_MATCHED * len(expected)
    with pytest.raises(ConfigError) as excinfo:
        get_model("tiny", weights=str(path))
    message = str(excinfo.value)
    assert f"only {matched} of its backbone's {len(expected)} tensors" in message
    assert "at least 90% must be" in message and f"model.weights={path} does not fit test_resnet" in message


def test_the_threshold_is_most_of_the_backbone_by_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = random_state("test_resnet")
    keys = sorted(backbone_keys("test_resnet"))
    needed = math.ceil(MIN_MATCHED * len(keys))
    dropped = keys[: len(keys) - needed]  # exactly the threshold still loads, with a warning
    enough = save({k: v for k, v in state.items() if k not in dropped}, tmp_path / "enough.safetensors")
    model = get_model("tiny", weights=str(enough))
    kept = [k for k in keys if k not in dropped]
    assert all(torch.equal(model.backbone.state_dict()[k], state[k]) for k in kept)
    assert f"{len(dropped)} of {len(keys)} backbone tensors are not in" in caplog.text
    too_few = save(
        {k: v for k, v in state.items() if k not in keys[: len(dropped) + 1]}, tmp_path / "few.pth"
    )
    with pytest.raises(ConfigError, match=f"only {needed - 1} of its backbone's {len(keys)} tensors"):
        get_model("tiny", weights=str(too_few))


def test_a_project_checkpoint_gives_its_backbone_and_drops_its_head(tmp_path: Path) -> None:
    trained = get_model("tiny", dropout_rate=0.1)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_()
    best = save_checkpoint(
        tmp_path / "checkpoints" / "best.pt", build_state(model=trained, config_yaml="seed: 1\n")
    )
    model = get_model("tiny", weights=str(best))
    for key, value in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert not torch.equal(model.head[1].weight, trained.head[1].weight)  # a fresh head, as for other weights

    exported = tmp_path / "detector.safetensors"  # the same detector as deepfake.evaluation.export writes it
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(exported))
    from_export = get_model("tiny", weights=str(exported))
    for key, value in trained.backbone.state_dict().items():
        assert torch.equal(from_export.backbone.state_dict()[key], value), key


def test_a_project_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = get_model("test_efficientnet")
    best = save_checkpoint(tmp_path / "best.pt", build_state(model=other))
    with pytest.raises(
        ConfigError, match=r"tensors are in that test_efficientnet checkpoint with the same name"
    ):
        get_model("tiny", weights=str(best))


def test_a_file_without_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ConfigError, match="holds no state dict"):
        get_model("tiny", weights=str(path))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="cannot be read as weights"):
        get_model("tiny", weights=str(tmp_path / "junk.safetensors"))
