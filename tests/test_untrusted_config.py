"""A config read back from a file never instantiates a target off the allow-list (deepfake.runs.safe_config).

Each entry point that rebuilds a config from a file gets a crafted checkpoint whose payload would create a
marker file: nested inside a value (`training.optimizer.foreach`) and at the top of an instantiated section
(`data._target_`). The tests prove the marker was never written and the error names the key and the target.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from deepfake.errors import UserError
from deepfake.evaluation.export import export
from deepfake.prediction.driver import predict
from deepfake.reporting.eval_sets import evaluate
from deepfake.runs.backup import ProjectBackup
from deepfake.runs.restore import restore
from deepfake.training.runner import train
from tests.conftest import ROOT, make_folder_dataset, run_cli
from tests.runs import make_config, run_dir_of

PAYLOAD = f"{__name__}.touch_marker"


def touch_marker(**kwargs: Any) -> None:
    """What a hostile config calls: leaves a file behind, so a test can tell whether it ran."""
    Path(os.environ["DEEPFAKE_TEST_MARKER"]).touch()


def nested(cfg: dict) -> str:
    cfg["training"]["optimizer"]["foreach"] = {"_target_": PAYLOAD, "weights_only": False}
    return f"training.optimizer.foreach._target_ is '{PAYLOAD}'"


def top_level(cfg: dict) -> str:
    cfg["data"]["_target_"] = PAYLOAD
    return f"data._target_ is '{PAYLOAD}'"


HOSTILE = {"nested": nested, "top_level": top_level}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny")
    data = make_folder_dataset(base / "data", videos=2, frames=2)
    overrides = {
        "training.num_epochs": 1,
        "training.ema.enabled": False,
        "training.checkpoint.every_n_steps": None,
    }
    train(make_config(base, data, **overrides))
    return {"run": run_dir_of(base), "data": data, "base": base}


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "payload-ran"
    monkeypatch.setenv("DEEPFAKE_TEST_MARKER", str(path))
    return path


def hostile_copy(run: Path, dest: Path, craft: Callable[[dict], str]) -> tuple[Path, str]:
    """A copy of `run` whose checkpoints carry a crafted config; still loads with weights_only=True."""
    shutil.copytree(run, dest)
    why = ""
    for name in ("last.pt", "best.pt"):
        path = dest / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        cfg = yaml.safe_load(state["config"])
        why = craft(cfg)
        state["config"] = yaml.safe_dump(cfg)
        torch.save(state, path)
        torch.load(path, weights_only=True)
    return dest, why


def assert_refused(excinfo: pytest.ExceptionInfo, why: str, marker: Path) -> None:
    assert why in str(excinfo.value) and "refusing the config saved in" in str(excinfo.value)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("kind", HOSTILE)
def test_resume_refuses_a_hostile_checkpoint(tiny_run: dict, tmp_path: Path, marker: Path, kind: str) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", HOSTILE[kind])
    with pytest.raises(UserError) as excinfo:
        train(make_config(tmp_path, tiny_run["data"], resume=str(run)))
    assert_refused(excinfo, why, marker)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_auto_resume_refuses_a_hostile_checkpoint(
    tiny_run: dict, tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", HOSTILE[kind])
    # As under `hydra.run.dir=<run> training.auto_resume=true`: the run directory is the existing one.
    monkeypatch.setattr("deepfake.training.run_dir.choose_run_dir", lambda cfg, resume: (run, True))
    with pytest.raises(UserError) as excinfo:
        train(make_config(tmp_path, tiny_run["data"], **{"training.auto_resume": True}))
    assert_refused(excinfo, why, marker)


@pytest.mark.parametrize("kind", HOSTILE)
def test_restore_of_a_hostile_backup_then_resume_is_refused(
    tiny_run: dict, tmp_path: Path, marker: Path, kind: str
) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", HOSTILE[kind])
    archive = ProjectBackup(run, include=["last.pt"]).create_backup("end")
    restored = restore(archive, tmp_path / "restored")
    with pytest.raises(UserError) as excinfo:
        train(make_config(tmp_path, tiny_run["data"], resume=str(restored)))
    assert_refused(excinfo, why, marker)


@pytest.mark.parametrize("kind", HOSTILE)
def test_evaluate_refuses_a_hostile_checkpoint(
    tiny_run: dict, tmp_path: Path, marker: Path, compose_cfg: Any, kind: str
) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", HOSTILE[kind])
    overrides = [f"checkpoint={run}", "data.num_workers=0", f"eval.out_dir={tmp_path / 'eval'}"]
    with pytest.raises(UserError) as excinfo:
        evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)
    assert_refused(excinfo, why, marker)
    assert not (tmp_path / "eval").exists()


def assert_predict_refused(checkpoint: Path, images: Path, output: Path, why: str, marker: Path) -> None:
    cfg = {"checkpoint": str(checkpoint), "input": str(images), "output": str(output), "num_workers": 0}
    with pytest.raises(UserError) as excinfo:
        predict(OmegaConf.create(cfg))
    assert_refused(excinfo, why, marker)


@pytest.mark.parametrize("kind", HOSTILE)
def test_predict_refuses_a_hostile_checkpoint(
    tiny_run: dict, tmp_path: Path, marker: Path, kind: str
) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", HOSTILE[kind])
    output = tmp_path / "preds.csv"
    assert_predict_refused(run, tiny_run["data"] / "test", output, why, marker)
    assert not output.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_export_refuses_a_hostile_checkpoint(tiny_run: dict, tmp_path: Path, marker: Path, kind: str) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", HOSTILE[kind])
    with pytest.raises(UserError) as excinfo:
        export(run, "safetensors", tmp_path / "m.safetensors")
    assert_refused(excinfo, why, marker)
    assert not (tmp_path / "m.safetensors").exists()


def test_a_hostile_safetensors_export_is_refused_too(tiny_run: dict, tmp_path: Path, marker: Path) -> None:
    """An exported file carries the config as metadata: crafted there, evaluate and predict refuse it."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    good = export(tiny_run["run"], "safetensors", tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata())
    cfg = yaml.safe_load(meta["config"])
    why = nested(cfg)
    meta["config"] = yaml.safe_dump(cfg)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(good), bad, metadata=meta)
    assert_predict_refused(bad, tiny_run["data"] / "test", tmp_path / "preds.csv", why, marker)


def test_every_ensemble_member_passes_the_allow_list(
    tiny_run: dict, tmp_path: Path, marker: Path, compose_cfg: Any
) -> None:
    """checkpoint=[good, hostile]: the second member's config is refused in predict and evaluate alike."""
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", nested)
    output = tmp_path / "preds.csv"
    cfg = {"checkpoint": [str(tiny_run["run"]), str(run)], "input": str(tiny_run["data"] / "test")}
    with pytest.raises(UserError) as excinfo:
        predict(OmegaConf.create({**cfg, "output": str(output), "num_workers": 0}))
    assert_refused(excinfo, why, marker)
    assert not output.exists()
    overrides = [
        f"checkpoint=[{tiny_run['run']},{run}]",
        "data.num_workers=0",
        f"eval.out_dir={tmp_path / 'eval'}",
    ]
    with pytest.raises(UserError) as excinfo:
        evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)
    assert_refused(excinfo, why, marker)
    assert not (tmp_path / "eval").exists()


def test_a_safetensors_export_with_a_bad_temperature_is_refused(tiny_run: dict, tmp_path: Path) -> None:
    """The temperature rides in the export's metadata: a crafted one is refused like the checkpoint's."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    good = export(tiny_run["run"], "safetensors", tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata())
    assert json.loads(meta["calibration"])["temperature"] > 0  # the run fitted one; the export keeps it
    for value, why in (('{"temperature": -1}', "-1"), ('{"temperature": "1e999"}', "1e999"), ("{nope", None)):
        bad = tmp_path / "bad.safetensors"
        save_file(load_file(good), bad, metadata={**meta, "calibration": value})
        with pytest.raises(UserError) as excinfo:
            export(bad, "torchscript", tmp_path / "m.pt")
        message = str(excinfo.value)
        if why is None:
            assert message == f"{bad}: its 'calibration' metadata is not JSON; export the checkpoint again"
        else:
            assert message.startswith(
                f"{bad}: its calibration temperature ({why!r}) is not a number in [0.0001, 10000]"
            )


@pytest.mark.cli
def test_cli_resume_and_auto_resume_print_one_error_line_and_exit_2(
    tiny_run: dict, tmp_path: Path, marker: Path
) -> None:
    run, why = hostile_copy(tiny_run["run"], tmp_path / "run", nested)
    env = {"DEEPFAKE_TEST_MARKER": str(marker), "PYTHONPATH": str(ROOT)}
    common = [
        "model=tiny",
        "data=folder",
        f"data.root={tiny_run['data']}",
        "data.num_workers=0",
        "hardware.device=cpu",
    ]
    for args in (
        [f"resume={run}", *common],
        [f"hydra.run.dir={run}", "training.auto_resume=true", *common],
    ):
        proc = run_cli([str(ROOT / "train.py"), *args], cwd=tmp_path, timeout=300, env=env)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and why in errors[0] and str(run / "checkpoints" / "last.pt") in errors[0]
        assert "Traceback" not in proc.stderr
        assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("preprocess", {"img_size": "big", "mean": [0, 0, 0], "std": [1, 1, 1]}, "its 'preprocess'"),
        ("preprocess", {"img_size": 32, "mean": [0, 0, 0], "std": [0, 1, 1]}, "its 'preprocess'"),
        ("preprocess", [1, 2, 3], "its 'preprocess'"),
        ("config", "- a\n- list\n", "is not a mapping of keys to values"),
    ],
)
def test_a_checkpoint_with_malformed_fields_is_a_user_error(
    tiny_run: dict, tmp_path: Path, field: str, value: Any, message: str
) -> None:
    state = torch.load(tiny_run["run"] / "checkpoints" / "best.pt", weights_only=True)
    state[field] = value
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=message):
        export(tmp_path / "bad.pt", "safetensors", tmp_path / "m.safetensors")
