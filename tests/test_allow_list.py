"""The allow-list of `_target_`s a saved config may name: every target conf/ uses passes, calls off the list are
refused, and runs saved before the module moves (old paths) still resume, evaluate and restore."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from deepfake.config import Config
from deepfake.errors import UserError
from deepfake.reporting.eval_sets import evaluate
from deepfake.runs.restore import restore
from deepfake.runs.safe_config import allowed_targets, check_untrusted
from deepfake.training.runner import train
from tests.conftest import CONF, ROOT, make_folder_dataset

# The allow-list itself.


def conf_targets() -> set[tuple[str, str]]:
    """(dotted key, target) for every `_target_` the conf/ tree sets outside Hydra's own `hydra:` node."""
    found = set()
    for path in CONF.rglob("*.yaml"):
        group = path.parent.relative_to(CONF).as_posix()
        if group.startswith("hydra"):
            continue
        text = path.read_text()
        node = yaml.safe_load(text) or {}
        package = "" if group == "." else group.replace("/", ".")
        header = re.match(r"# @package (\S+)", text)  # experiment presets are `_global_`
        if header:
            package = "" if header.group(1) == "_global_" else header.group(1)
        stack: list[tuple[str, Any]] = [(package, node)]
        while stack:
            key, value = stack.pop()
            if isinstance(value, dict):
                if "_target_" in value:
                    found.add((key, value["_target_"]))
                stack.extend((f"{key}.{k}" if key else k, v) for k, v in value.items() if k != "hydra")
    return found


def test_every_target_the_conf_tree_names_is_allowed() -> None:
    targets = conf_targets()
    assert ("training.optimizer", "torch.optim.AdamW") in targets and (
        "model",
        "deepfake.model.detector.get_model",
    ) in targets
    allowed = allowed_targets()
    for key, target in targets:
        assert target in allowed.get(key, ()), (key, target)


def test_defaults_old_paths_and_optimizers_pass() -> None:
    check_untrusted(OmegaConf.to_yaml(OmegaConf.structured(Config), resolve=True), "defaults")
    check_untrusted((ROOT / "tests/fixtures/oldpaths_run/.hydra/config.yaml").read_text(), "fixture")
    for target in ("torch.optim.SGD", "torch.optim.RMSprop", "torch.optim.Adagrad", "timm.optim.Lamb"):
        check_untrusted({"training": {"optimizer": {"_target_": target, "_partial_": True}}}, "x")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (  # the example: torch.load of a base64 pickle, nested in an optimizer argument
            {
                "training": {
                    "optimizer": {
                        "_target_": "torch.optim.AdamW",
                        "foreach": {
                            "_target_": "torch.load",
                            "weights_only": False,
                            "f": {
                                "_target_": "io.BytesIO",
                                "initial_bytes": {"_target_": "base64.b64decode", "s": "AA=="},
                            },
                        },
                    }
                }
            },
            "training.optimizer.foreach._target_ is 'torch.load'",
        ),
        ({"training": {"optimizer": {"_target_": "os.system", "command": "x"}}}, "'os.system'"),
        ({"model": {"_target_": "deepfake.model.detector.get_model", "_args_": ["x"]}}, "model sets _args_"),
        ({"data": {"test_sets": [{"_target_": "os.system"}]}}, "data.test_sets[0]._target_ is 'os.system'"),
        ({"eval": {"_partial_": True, "_args_": []}}, "eval sets _args_, _partial_"),
        ({"_target_": "os.system"}, "the root._target_ is 'os.system'"),
        ({"model": {"_target_": {"a": 1}}}, "model._target_ is {'a': 1}"),
        ({"data": {"_target_": "${oc.env:HOME}"}}, "data._target_ is '${oc.env:HOME}'"),
        (  # an interpolation that builds a node with a target only when resolved
            {
                "backup": {
                    "_target_": "deepfake.runs.backup.ProjectBackup",
                    "mirror": '${oc.create:"{_target_: os.system}"}',
                }
            },
            "backup.mirror._target_ is 'os.system'",
        ),
    ],
)
def test_check_untrusted_refuses_calls_off_the_list(config: dict, named: str) -> None:
    with pytest.raises(UserError, match=r"refusing the config saved in f\.pt") as excinfo:
        check_untrusted(config, "f.pt")
    assert named in str(excinfo.value)


# Runs saved before the package split store the old module paths: they still pass the allow-list.

OLD_RUN = ROOT / "tests" / "fixtures" / "oldpaths_run"


@pytest.fixture
def old_run(tmp_path: Path) -> dict[str, Path]:
    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2, size=32)
    return {"run": Path(shutil.copytree(OLD_RUN, tmp_path / "run")), "data": data}


def resume_config(base: Path, run: Path, data: Path) -> Config:
    """From Python only keys that differ from the defaults override the saved config: these three."""
    config = Config(base_path=str(base), resume=str(run))
    config.data.root, config.training.num_epochs = str(data), 2
    return config


@pytest.mark.slow  # a training run, a resume and more: end to end
def test_an_old_run_resumes_evaluates_and_restores(old_run: dict, tmp_path: Path, compose_cfg: Any) -> None:
    run, data = old_run["run"], old_run["data"]
    train(resume_config(tmp_path, run, data))
    assert yaml.safe_load((run / "metrics.json").read_text())["epochs_completed"] == 2

    overrides = [f"checkpoint={OLD_RUN / 'checkpoints' / 'last.pt'}", "data.num_workers=0", f"data.root={data}",
                 f"eval.out_dir={tmp_path / 'eval'}", "eval.bootstrap_samples=10"]  # fmt: skip
    reports = evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)
    assert reports["test"]["counts"]["images"] == 8

    (archive,) = (OLD_RUN / "backups").glob("*.tar.gz")
    restored = restore(archive, tmp_path / "restored")
    train(resume_config(tmp_path, restored, data))
    assert yaml.safe_load((restored / "metrics.json").read_text())["epochs_completed"] == 2


def test_legacy_targets_are_accepted_and_replaced_by_importable_current_paths() -> None:
    from hydra.utils import get_object

    from deepfake.runs.safe_config import LEGACY_TARGETS, PROJECT_TARGETS, trusted_config

    current = set().union(*PROJECT_TARGETS.values()) | {"deepfake.sweeps.callbacks.SweepSummaryCallback"}
    for new in LEGACY_TARGETS.values():
        assert new in current and callable(get_object(new)), new
    saved = {
        "training": {"scheduler": {"_target_": "deepfake.schedulers.create_scheduler", "_partial_": True}},
        "backup": {"_target_": "deepfake.backup.ProjectBackup", "every_n_epochs": 1},
        "model": {"_target_": "deepfake.models.get_model", "architecture": "tiny"},  # before 26's rooms
    }
    config = trusted_config(saved, "old.pt")
    assert config.model._target_ == "deepfake.model.detector.get_model"
    assert config.training.scheduler._target_ == "deepfake.training.schedulers.create_scheduler"
    assert config.backup._target_ == "deepfake.runs.backup.ProjectBackup"
    assert config.backup.every_n_epochs == 1 and config.training.scheduler._partial_ is True


@pytest.mark.parametrize(("key", "value"), [("frames", "x"), ("dropout_rate", 5.0), ("temporal_heads", 3)])
def test_saved_model_settings_the_builder_cannot_take_are_one_user_error(
    tmp_path: Path, key: str, value: Any
) -> None:
    """A tampered `model` section of a checkpoint's config ends in one message naming the file, not a traceback."""
    from deepfake.evaluation.inference import load_detector
    from deepfake.model.detector import get_model
    from deepfake.runs.checkpoint import build_state, save_checkpoint

    state = build_state(model=get_model("tiny", img_size=32, frames=2))
    state["config"] = {"model": {key: value}}
    path = save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(
        UserError, match=rf"^{path}: its saved model settings cannot build a detector|model\.temporal"
    ):
        load_detector(path)
