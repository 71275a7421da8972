"""Environment and input faults end in one `error:` line with the path and the fix, never a traceback
(issue 19, items 3 and 5): full disks, read-only folders, odd values and Hydra's composition errors."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from deepfake.config import Config, to_config
from deepfake.errors import ConfigError
from deepfake.exits import run_reporting_errors
from deepfake.prediction.driver import predict
from deepfake.reporting.eval_sets import evaluate
from deepfake.runs.backup import ProjectBackup
from deepfake.training.runner import train
from tests.conftest import ROOT, make_folder_dataset, run_cli
from tests.runs import fail_fsync_of, make_config, run_dir_of

NO_SPACE = OSError(28, "No space left on device")


def reported(fn: Callable[..., Any], *args: Any, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """(exit code, stderr) of `fn(*args)` run as the entry points run it."""
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(fn, *args)
    return exit_info.value.code, capsys.readouterr().err


# -- odd values and Hydra's own errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.learning_rate=nan", "training.learning_rate must be > 0 (got nan)"),
        ("training.weight_decay=inf", "training.weight_decay must be >= 0 (got inf)"),
        ("data.img_size=-5", "data.img_size must be > 0, or null for the default (got -5)"),
        ("model.img_size=0", "model.img_size must be > 0, or null for the default (got 0)"),
    ],
)
def test_non_finite_and_negative_values_are_refused(override: str, message: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.from_dotlist([override]))
    with pytest.raises(ConfigError) as e:
        to_config(cfg)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    ("script", "override", "message"),
    [
        (
            "train.py",
            "training.batch_size=abc",
            "Value 'abc' of type 'str' could not be converted to Integer",
        ),
        ("evaluate.py", "model=doesnotexist", "Could not find 'model/doesnotexist'"),
        ("predict.py", "nokey=1", "Key 'nokey' not in 'PredictConfig'"),
    ],
)
@pytest.mark.cli
def test_hydra_composition_errors_are_one_error_line_and_exit_2(
    script: str, override: str, message: str
) -> None:
    result = run_cli([script, override], cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "HYDRA_FULL_ERROR" not in result.stderr


@pytest.mark.cli
def test_cli_config_errors_print_one_line_and_leave_no_run_dir(tmp_path: Path) -> None:
    result = run_cli(["train.py", "model=doesnotexist"], cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: In 'train': Could not find 'model/doesnotexist'")
    assert result.stderr.count("\n") == 1
    result = run_cli(
        ["train.py", "training.learning_rate=nan", f"base_path={tmp_path}"], cwd=ROOT, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: training.learning_rate must be > 0 (got nan); set e.g. training.learning_rate=1e-4\n"
    )
    assert not list((tmp_path / "outputs").glob("*/*")), "a refused command left a run directory behind"


@pytest.mark.cli
def test_cli_error_after_the_run_started_is_in_its_train_log(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli(
        ["train.py", "data=folder", f"data.root={missing}", f"base_path={tmp_path}", "model=tiny"],
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and str(missing) in line
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert line in (run / "train.log").read_text()


@pytest.mark.cli
def test_cli_refuses_a_run_dir_that_holds_an_earlier_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"earlier run")
    (run / "metrics.json").write_text('{"stop_reason": "completed"}')
    result = run_cli(["train.py", f"hydra.run.dir={run}", "model=tiny"], cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {run} already holds an earlier run (checkpoints/, metrics.json); a new run would overwrite it. "
        "Continue that run with training.auto_resume=true (or resume=<run dir>), or pick another directory "
        "(hydra.run.dir=...)\n"
    )
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"earlier run"
    assert json.loads((run / "metrics.json").read_text()) == {"stop_reason": "completed"}


# -- full disks -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A dataset and one finished 1-epoch run, in a folder an unprivileged user can read."""
    base = Path(tempfile.mkdtemp(prefix="deepfake-os-"))
    base.chmod(0o777)
    data = make_folder_dataset(base / "data", videos=2, frames=2)
    train(make_config(base / "trained", data, **{"training.num_epochs": 1, "training.ema.enabled": False}))
    yield {"base": base, "data": data, "run": run_dir_of(base / "trained")}
    for p in base.rglob("*"):  # let a non-root user delete what the tests made read-only
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o777)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
@pytest.mark.parametrize("name", [".last.pt.", ".metrics.json."])
def test_disk_full_while_training_writes_is_one_error_line(
    name: str,
    shared: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    fail_fsync_of(monkeypatch, name, NO_SPACE)
    config = make_config(
        tmp_path, shared["data"], **{"training.num_epochs": 1, "training.ema.enabled": False}
    )
    code, err = reported(train, config, capsys=capsys)
    target = run_dir_of(tmp_path) / ("checkpoints/last.pt" if "last" in name else "metrics.json")
    assert code == 2 and "Traceback" not in err
    assert f"error: cannot use {target}: No space left on device; free space on that disk" in err


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_disk_full_while_writing_a_backup_is_a_warning_and_keeps_the_older_one(
    shared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = Path(shutil.copytree(shared["run"], tmp_path / "run"))
    backup = ProjectBackup(run)
    backup.create_backup()
    before = sorted(p.name for p in (run / "backups").iterdir())
    fail_fsync_of(monkeypatch, ".tar.gz", NO_SPACE)
    with caplog.at_level(logging.WARNING):
        assert backup.create_backup() is None
        backup.exit_backup("crash", 1, 3)
    assert f"No space left on device: '{run / 'backups'}/" in caplog.text  # names the archive it was writing
    assert "Traceback" not in caplog.text
    assert sorted(p.name for p in (run / "backups").iterdir()) == before  # no torn archive, none removed


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_a_backup_folder_that_cannot_be_made_is_a_warning(
    shared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = Path(shutil.copytree(shared["run"], tmp_path / "run"))
    shutil.rmtree(run / "backups")
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "backups":
            raise OSError(28, "No space left on device", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with caplog.at_level(logging.WARNING):
        assert ProjectBackup(run).create_backup("epoch", 1, 3) is None
    assert f"backup failed: cannot create {run / 'backups'}" in caplog.text


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_disk_full_while_writing_predictions_is_one_error_line(
    shared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fail_fsync_of(monkeypatch, "preds.csv", NO_SPACE, exact=True)  # the rows, appended as they are scored
    output = tmp_path / "preds.csv"
    cfg = {"checkpoint": str(shared["run"]), "input": str(shared["data"] / "test"), "output": str(output)}
    code, err = reported(predict, cfg, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: cannot use {output}: No space left on device")
    # The rows written before the disk filled stay, each complete: a rerun with space goes on from them.
    assert output.read_text().startswith("path,prob,pred,") and output.read_text().endswith("\n")


# -- read-only folders: root ignores file modes, so these run as an unprivileged user ------------------


def _as_nobody(stderr: str, fn: Callable[..., Any], args: tuple) -> None:
    fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)  # pytest's capture object is not fd 2
    torch.set_num_threads(1)
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    run_reporting_errors(fn, *args)


def run_unprivileged(tmp_path: Path, fn: Callable[..., Any], *args: Any) -> tuple[int | None, str]:
    stderr = tmp_path / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(target=_as_nobody, args=(str(stderr), fn, args))
    child.start()
    child.join(300)
    return child.exitcode, stderr.read_text()


def read_only(folder: Path) -> Path:
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    return folder


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_read_only_base_path_is_one_error_line(shared: dict[str, Path], tmp_path: Path) -> None:
    base = read_only(Path(tempfile.mkdtemp(dir=shared["base"])))
    code, err = run_unprivileged(tmp_path, train, make_config(base, shared["data"]))
    assert code == 2 and "Traceback" not in err
    assert (
        err
        == f"error: cannot use {base / 'outputs'}: Permission denied; make it writable or write elsewhere "
        "(e.g. base_path=/writable/folder)\n"
    )


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_resume_and_evaluate_on_a_read_only_run(
    shared: dict[str, Path], tmp_path: Path, compose_cfg: Callable[..., Any]
) -> None:
    holder = Path(tempfile.mkdtemp(dir=shared["base"]))
    holder.chmod(0o755)
    run = read_only(Path(shutil.copytree(shared["run"], holder / "run")))
    code, err = run_unprivileged(
        tmp_path, train, make_config(shared["base"], shared["data"], resume=str(run))
    )
    assert code == 2 and "Traceback" not in err
    assert err.startswith(
        f"error: the run to resume, {run} is not writable (Permission denied); make it writable"
    )

    # One intra-op thread: an OpenMP pool the parent already started would hang a forked child.
    one_thread = "hardware.num_threads=1"
    code, err = run_unprivileged(
        tmp_path, evaluate, compose_cfg([f"checkpoint={run}", one_thread], config_name="evaluate")
    )
    assert code == 2 and "Traceback" not in err
    assert err == (
        f"error: the results folder {run / 'eval'} is not writable (Permission denied); "
        "pass eval.out_dir=<a writable folder>\n"
    )
    out = Path(tempfile.mkdtemp(dir=shared["base"]))
    out.chmod(0o777)
    overrides = [f"checkpoint={run}", f"eval.out_dir={out}", one_thread]
    code, err = run_unprivileged(
        tmp_path, evaluate, compose_cfg(overrides, config_name="evaluate"), overrides
    )
    assert code == 0, err
    assert json.loads((out / "test" / "metrics.json").read_text())["counts"]["images"] == 8


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_predict_into_a_read_only_folder_fails_before_inference(
    shared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_inference(*args: Any) -> None:
        raise AssertionError("inference started although the output cannot be written")

    monkeypatch.setattr("deepfake.prediction.driver.load_ensemble", no_inference)
    folder = read_only(Path(tempfile.mkdtemp(dir=shared["base"])))
    cfg = {"checkpoint": str(shared["run"]), "input": str(shared["data"]), "output": str(folder / "p.csv")}
    code, err = run_unprivileged(tmp_path, predict, cfg)
    assert code == 2
    assert err == (
        f"error: the output folder {folder} is not writable (Permission denied); "
        "pass output=<a path in a writable folder>\n"
    )
