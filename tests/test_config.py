"""The config tree composes, is schema-checked, and bad input gets one clear message without a traceback."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from deepfake.config import Config, to_config
from deepfake.errors import ConfigError
from tests.conftest import ROOT, run_cli


def test_default_tree_composes(compose_cfg) -> None:
    cfg = compose_cfg([])
    assert cfg.model.architecture == "tiny"
    assert cfg.data.kind == "synthetic"
    assert cfg.training.monitor == "val/auc"
    assert cfg.training.early_stopping.monitor == "val/auc"
    assert set(cfg) >= {"model", "training", "data", "hardware", "backup", "logging", "base_path"}


@pytest.mark.parametrize("name", ["efficientnet_b4", "xception", "swin_transformer", "resnet50", "vit_small"])
def test_model_presets_set_architecture(compose_cfg, name: str) -> None:
    cfg = compose_cfg([f"model={name}"])
    assert cfg.model.architecture == name
    assert cfg.model._target_ == "deepfake.model.detector.get_model"


def test_schema_rejects_unknown_key_and_wrong_type(compose_cfg) -> None:
    with pytest.raises(Exception, match="batchsize"):
        compose_cfg(["training.batchsize=8"])
    with pytest.raises(Exception, match="batch_size"):
        compose_cfg(["training.batch_size=abc"])


def test_python_config_is_checked() -> None:
    config = Config(base_path="/tmp/x", use_drive=False)
    config.training.learning_rate = 0.0
    with pytest.raises(ConfigError, match=r"training.learning_rate must be > 0"):
        to_config(config)
    config.training.learning_rate = 1e-3
    config.training.amp = "fp8"
    with pytest.raises(ConfigError, match=r"training.amp='fp8' is not one of auto, bf16, fp16, off"):
        to_config(config)


def test_python_config_rejects_unknown_attribute() -> None:
    cfg = OmegaConf.structured(Config)
    with pytest.raises((ConfigAttributeError, ConfigKeyError, ValidationError)):
        cfg.training.batchsize = 3


CLI_ERRORS = [
    (["training.batchsize=8"], "batchsize"),
    (["training.batch_size=abc"], "abc"),
    (["training.learning_rate=0"], "training.learning_rate must be > 0"),
    (["training.learning_rate=-1e-3"], "training.learning_rate must be > 0"),
    (["model.architecture=efficientnet_b9x"], "Did you mean"),
    (["data=folder", "data.root=/nonexistent/ffpp"], "Expected layout"),
]


@pytest.mark.cli
@pytest.mark.parametrize(("overrides", "message"), CLI_ERRORS)
def test_cli_user_errors_are_one_message(tmp_path: Path, overrides: list[str], message: str) -> None:
    proc = run_cli([str(ROOT / "train.py"), f"base_path={tmp_path}", *overrides], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert message in output
    assert "Traceback" not in output


def test_optimizer_is_replaced_not_merged_with_the_default(compose_cfg) -> None:
    """Switching to SGD drops AdamW's betas instead of passing them to SGD."""
    cfg = compose_cfg(
        [
            "training.optimizer._target_=torch.optim.SGD",
            "~training.optimizer.betas",
            "+training.optimizer.momentum=0.9",
        ]
    )
    optimizer = to_config(cfg).training.optimizer
    assert dict(optimizer) == {"_target_": "torch.optim.SGD", "_partial_": True, "momentum": 0.9}
