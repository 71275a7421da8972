"""`model.pretrained=true` without the weights: one error at once, before any run folder; cached weights load.

The session is offline (conftest sets HF_HUB_OFFLINE=1); the unreachable-hub cases point the hub at a closed
local port (127.0.0.1:9), so nothing here touches the network.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from deepfake.config import Config, to_config
from deepfake.errors import ConfigError
from deepfake.model.detector import get_model
from deepfake.model.pretrained import weight_source
from deepfake.training.build import build_model
from tests.conftest import ROOT, run_cli
from train import train

CLOSED = "http://127.0.0.1:9"  # the discard port: connection refused at once


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hugging Face's and torch's caches pointed at empty folders, so no weights are found locally."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path
    torch.hub.set_dir(hub)


def config(base: Path, architecture: str, **model: object) -> Config:
    cfg = Config(base_path=str(base / "base"), use_drive=False)
    cfg.model.architecture = architecture
    cfg.model.pretrained = True
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def refused(cfg: Config) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        train(cfg)
    return str(info.value), time.perf_counter() - start


def test_offline_without_cached_weights_fails_at_once_and_leaves_no_run_folder(empty_caches: Path) -> None:
    message, seconds = refused(config(empty_caches, "efficientnet_b0"))
    assert seconds < 5, seconds
    assert (
        "model.weights=/path/efficientnet_b0.safetensors" in message and "model.pretrained=false" in message
    )
    assert "Hugging Face timm/efficientnet_b0.ra_in1k" in message and "HF_HUB_OFFLINE=1 is set" in message
    assert not (empty_caches / "base").exists()  # no outputs/<date>/<time> with only a log
    # A legacy model whose weights are a plain URL (model=xception): torch's hub cache is looked at too.
    message, _ = refused(config(empty_caches, "xception"))
    assert "weights of xception (https://" in message and str(empty_caches / "torch") in message
    # Resuming, the weights come from the checkpoint: the model is built without fetching any.
    cfg = to_config(config(empty_caches, "tiny", img_size=32))
    assert build_model(cfg, resuming=True).display_name == "tiny (timm test_resnet)"


def test_an_unreachable_hub_fails_at_once(empty_caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode not set, but the hub does not answer: the check asks once, briefly, and says why."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", CLOSED + "/{repo_id}/resolve/{revision}/{filename}"
    )
    message, seconds = refused(config(empty_caches, "resnet50"))
    assert seconds < 5, seconds
    assert "127.0.0.1:9 cannot be reached (ConnectError" in message and "model.pretrained=false" in message
    assert not (empty_caches / "base").exists()


def test_weights_in_the_local_cache_load_offline(empty_caches: Path) -> None:
    """A Hugging Face cache copied from a machine with network is used as is, with no network."""
    source = weight_source("test_resnet")
    assert source is not None and source.repo is not None
    repo = Path(constants.HF_HUB_CACHE) / f"models--{source.repo.replace('/', '--')}"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    reference = timm.create_model("test_resnet", pretrained=False)  # with its 1000-class head, as on the hub
    save_file(reference.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    model = get_model("tiny", pretrained=True)
    torch.testing.assert_close(model.backbone.conv1[0].weight, reference.conv1[0].weight)
    assert model.display_name == "tiny (timm test_resnet)"


@pytest.mark.cli
def test_the_command_line_refuses_a_preset_in_one_line(tmp_path: Path) -> None:
    """`python train.py experiment=clip_probe` with no weights and no hub: exit 2, one `error:` line, no folder."""
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": CLOSED,
           "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}  # fmt: skip
    proc = run_cli([str(ROOT / "train.py"), "experiment=clip_probe", f"base_path={tmp_path / 'base'}"],
                   cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr and "Retrying" not in proc.stderr
    assert (
        "weights of vit_base_patch16_clip_224.openai (Hugging Face timm/vit_base_patch16_clip_224.openai)"
        in errors[0]
    )
    assert "model.weights=" in errors[0] and "model.pretrained=false" in errors[0]
    assert not (tmp_path / "base" / "outputs").exists()
