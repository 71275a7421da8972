"""A run's records stay true: best.pt exists whenever a best epoch is recorded, metrics.json is strict JSON,
a run dir is never reused by a new run, and the small logging promises hold (issue 19, items 2, 3, 7, 9)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.errors import UserError
from deepfake.prediction.driver import predict
from deepfake.reporting.plot import plot_run
from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.runs.checkpoint import load_checkpoint, save_checkpoint, saved_epoch
from deepfake.training.run_dir import earlier_run_files, refuse_earlier_run
from deepfake.training.runner import train
from tests.conftest import make_flat_test_set, make_folder_dataset
from tests.runs import STEPS_PER_EPOCH, fail_fsync_of, make_config, run_dir_of


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the runner handles it as an error it could report."""


def strict_json(path: Path) -> Any:
    """json.loads that refuses bare NaN/Infinity, as every strict reader (jq, JavaScript) does."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path} holds bare {token}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """One 2-epoch run, logging less often than an epoch has steps, that scores a test set at its end."""
    base = tmp_path_factory.mktemp("finished")
    test_set = make_flat_test_set(base / "flat")
    train(
        make_config(
            base,
            data,
            **{
                "training.log_every_n_steps": 100,
                "data.test_sets": [str(test_set)],
                "eval.bootstrap_samples": 100,
            },
        )
    )
    return run_dir_of(base)


def recorded_best(run: Path) -> int | None:
    return strict_json(run / "metrics.json")["best"]["epoch"]


def assert_best_pt_matches_records(run: Path) -> None:
    """Every record of the best epoch (metrics.json, last.pt's monitor state) has its best.pt."""
    epoch = recorded_best(run)
    in_last = load_checkpoint(run / "checkpoints" / "last.pt")["monitor"]["best"]["epoch"]
    assert in_last == epoch
    assert saved_epoch(run / "checkpoints" / "best.pt") == epoch, "the recorded best epoch has no best.pt"


# -- item 2: best.pt exists whenever a best epoch is recorded -------------------------------------------


@pytest.mark.slow  # a training run, a resume and more: end to end
def test_a_kill_while_best_pt_is_written_records_no_best_and_resume_completes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, data)
    with monkeypatch.context() as m:
        fail_fsync_of(m, ".best.pt.", Killed())  # epoch 1 is always a new best: killed writing its best.pt
        with pytest.raises(Killed):
            train(config)
    run = run_dir_of(tmp_path)
    assert not (run / "checkpoints" / "best.pt").exists()
    assert recorded_best(run) is None  # nothing claims a best epoch whose file never landed
    assert load_checkpoint(run / "checkpoints" / "last.pt")["monitor"]["best"]["epoch"] is None
    (run / "checkpoints" / ".best.pt.99999.tmp").write_bytes(b"half a checkpoint")  # what SIGKILL leaves

    train(make_config(tmp_path, data, resume=str(run)))
    assert_best_pt_matches_records(run)
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow  # a training run, a resume and more: end to end
def test_a_missing_best_pt_is_rebuilt_from_last_pt_on_resume(
    finished: Path, data: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    best = recorded_best(run)
    assert best is not None
    if best != 2:  # make last.pt the best epoch, as after a kill between last.pt and best.pt
        shutil.copy(run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt")
    (run / "checkpoints" / "best.pt").unlink()
    train(make_config(tmp_path, data, resume=str(run)))
    assert_best_pt_matches_records(run)


@pytest.mark.slow  # a training run, a resume and more: end to end
def test_a_stale_best_is_reset_with_a_warning_when_it_cannot_be_rebuilt(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(make_config(tmp_path, data, **{"training.num_epochs": 1}))
    run = run_dir_of(tmp_path)
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["monitor"]["best"]["epoch"] = 7  # a best epoch whose best.pt was lost, and last.pt is not it
    save_checkpoint(last, state)
    (run / "checkpoints" / "best.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="deepfake"):
        train(make_config(tmp_path, data, resume=str(run), **{"training.num_epochs": 2}))
    assert "no best.pt for the recorded best epoch 7" in caplog.text and "the best is reset" in caplog.text
    assert_best_pt_matches_records(run)
    assert recorded_best(run) == 2


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_disk_full_while_writing_best_pt_is_one_error_line_and_records_no_best(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from deepfake.exits import run_reporting_errors

    fail_fsync_of(monkeypatch, ".best.pt.", OSError(28, "No space left on device"))
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(train, make_config(tmp_path, data, **{"training.num_epochs": 1}))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    run = run_dir_of(tmp_path)
    assert f"error: cannot use {run / 'checkpoints' / 'best.pt'}: No space left on device; free space" in err
    assert "Traceback" not in err
    assert recorded_best(run) is None and not (run / "checkpoints" / "best.pt").exists()


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_a_run_started_from_best_pt_gets_its_own_best_pt_predictions_and_test_scores(
    finished: Path, data: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path, data, resume=str(finished / "checkpoints" / "best.pt"))
    train(config)
    run = run_dir_of(tmp_path)
    assert run != finished
    assert saved_epoch(run / "checkpoints" / "best.pt") == recorded_best(run) is not None
    assert (run / "val_predictions.csv").is_file()
    (scored,) = (run / "eval").glob("*/metrics.json")
    assert strict_json(scored)["counts"]["images"] > 0


# -- item 3: an earlier run is never overwritten -------------------------------------------------------


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_only_an_earlier_runs_files_make_a_run_dir_taken(tmp_path: Path, finished: Path) -> None:
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)  # what Hydra makes before the job starts
    (fresh / "train.log").write_text("")
    (fresh / "checkpoints").mkdir()  # a run that died before its first save
    assert earlier_run_files(fresh) == []
    refuse_earlier_run(fresh)
    assert earlier_run_files(finished) == ["checkpoints/", "metrics.json", "TensorBoard events"]
    with pytest.raises(UserError, match=r"training.auto_resume=true .* or pick another directory"):
        refuse_earlier_run(finished)


# -- item 7: an undefined metric and odd inputs ---------------------------------------------------------


def one_class_val_manifest(root: Path) -> Path:
    rows = ["path,label,split"]
    for p in sorted(root.rglob("*.*")):
        split, label = p.relative_to(root).parts[:2]
        if split in ("train", "val") and not (split == "val" and label == "fake"):
            rows.append(f"{p.relative_to(root)},{label},{split}")
    manifest = root / "one_class_val.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_a_one_class_validation_split_writes_null_and_says_why_no_best(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    root = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    config = make_config(tmp_path, root, check_on_start=False)
    config.data.kind, config.data.manifest = "manifest", str(one_class_val_manifest(root))
    with caplog.at_level(logging.INFO, logger="deepfake"):
        assert str(train(config)) == "nan"
    run = run_dir_of(tmp_path)
    metrics = strict_json(run / "metrics.json")
    assert metrics["final"]["val/auc"] is None and metrics["best"]["epoch"] is None
    assert "no best epoch was selected, so there is no best.pt" in caplog.text
    assert "the validation split has 4 real and 0 fake images" in caplog.text
    assert "must be real number" not in capsys.readouterr().err  # the old `%.4f` of a None best


def test_dangling_and_looping_links_in_a_predict_folder_get_error_rows(
    finished: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(next((finished.parent.parent.parent / "flat").rglob("*.png")), folder / "ok.png")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    rows = predict({"checkpoint": str(finished), "input": str(folder), "output": str(tmp_path / "p.csv")})
    by_name = {Path(r["path"]).name: r for r in rows}
    assert sorted(by_name) == ["dangling.png", "loop.png", "ok.png"]
    assert by_name["ok.png"]["error"] is None and 0.0 <= by_name["ok.png"]["prob"] <= 1.0
    for name in ("dangling.png", "loop.png"):
        assert by_name[name]["prob"] is None and by_name[name]["error"]


# -- item 9: TensorBoard promises ------------------------------------------------------------------------


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_last_step_of_each_epoch_is_logged_even_below_log_every(finished: Path) -> None:
    events = EventAccumulator(str(finished))
    events.Reload()
    for tag in ("train/loss", "train/lr", "train/grad_norm"):
        assert [e.step for e in events.Scalars(tag)] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH], tag


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_no_tensorboard_hint_when_tensorboard_is_off(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="deepfake"):
        train(make_config(tmp_path, data, **{"training.num_epochs": 1, "logging.tensorboard": False}))
    assert "best val/auc" in caplog.text
    assert "inspect with: tensorboard" not in caplog.text
    assert not list(run_dir_of(tmp_path).glob("events.out.tfevents.*"))


def test_a_run_stopped_before_its_first_log_step_does_not_blame_tensorboard(tmp_path: Path) -> None:
    TensorBoardLogger(tmp_path).close()  # TensorBoard on, but nothing logged yet
    with pytest.raises(UserError) as e:
        plot_run(tmp_path)
    assert "stopped before its first logged step" in str(e.value)
    assert "logging.tensorboard=false" not in str(e.value)
