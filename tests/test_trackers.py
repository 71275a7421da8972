"""The logger group and the tracking room without a server: composition, the background sender (outages,
bounds, refusals, give-up), metrics.csv by content, run ids for resume, sweep tags, errors before training."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose as compose_config
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from deepfake.cli import option_override_message
from deepfake.config import Config, to_config
from deepfake.errors import UserError
from deepfake.reporting.plot import plot_run
from deepfake.system.distributed import DistContext
from deepfake.tracking import run_info as run_info_module
from deepfake.tracking.csv_tracker import CsvTracker, read_rows, read_scalars
from deepfake.tracking.run_info import RunInfo, run_info
from deepfake.tracking.sender import Sender
from deepfake.tracking.tracker import Row, Tracker
from deepfake.tracking.trackers import Trackers, check_trackers, run_files, saved_ids
from deepfake.training.observers import build_trackers
from tests.conftest import CONF


def chosen(cfg: DictConfig) -> list[str]:
    return [k for k in ("tensorboard", "csv", "mlflow", "wandb") if cfg.logger[k] is not None]


@pytest.fixture(scope="module")
def compose() -> Iterator[Callable[..., DictConfig]]:
    """conf/train.yaml composed with overrides, under one Hydra initialisation for the module's tests."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose_config("train", overrides=list(overrides))


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_the_logger_group_selects_exactly_the_named_trackers(compose: Callable[..., DictConfig]) -> None:
    assert chosen(compose()) == ["tensorboard"]  # today's behaviour is the default
    both = compose("logger=[tensorboard,mlflow]", "logger.mlflow.tracking_uri=http://h:5000")
    assert chosen(both) == ["tensorboard", "mlflow"] and both.logger.mlflow.tracking_uri == "http://h:5000"
    assert chosen(compose("logger=many")) == ["tensorboard", "csv", "mlflow", "wandb"]
    assert chosen(compose("logger=[]")) == []
    # Through to_config (what train() runs) the choice holds: an unselected tracker stays off.
    assert chosen(to_config(compose("logger=csv"))) == ["csv"]
    # From Python, and for checkpoints saved before the group existed, TensorBoard stays on.
    assert chosen(to_config(Config())) == ["tensorboard"] and chosen(to_config({"seed": 1})) == [
        "tensorboard"
    ]
    with pytest.raises(UserError, match=r"logger.wandb.mode='cloud' is not one of online, offline"):
        to_config(compose("logger=wandb", "logger.wandb.mode=cloud"))
    with pytest.raises(UserError, match=r"Key 'trackinguri' not in 'MlflowLoggerConfig'"):
        to_config(compose("logger=mlflow", "+logger.mlflow.trackinguri=x"))


def test_cli_slips_with_the_group_are_one_line(compose: Callable[..., DictConfig]) -> None:
    """A key of a tracker that was not chosen, and `logger=null`, fail inside Hydra without a message of theirs."""
    for argv in (["logger=csv", "logger.mlflow.tracking_uri=x"], ["logger=null"]):
        with pytest.raises((AssertionError, ValueError)) as e:
            compose(*argv)
        message = option_override_message(e.value, argv)
        assert message is not None
    assert option_override_message(AssertionError("Unexpected type for root: NoneType"), [
        "logger=csv", "logger.mlflow.tracking_uri=x"]) == (
        "logger.mlflow.tracking_uri=x sets the mlflow tracker, which is not chosen: add logger=mlflow "
        "(or a list, e.g. logger=[tensorboard,mlflow])"
    )  # fmt: skip
    assert option_override_message(e.value, ["logger=null"]) == (
        "logger=null is not an option: for none, pass logger=[] (or ~logger)"
    )


def test_missing_packages_and_misread_uris_are_refused_before_anything_is_built(
    compose: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(UserError) as e:
        check_trackers(compose("logger=[csv,mlflow]").logger)
    assert (
        str(e.value)
        == "logger=mlflow needs the mlflow package, which is not installed: pip install 'deepfake[mlflow]'"
    )
    check_trackers(compose("logger=[csv,wandb]").logger)  # the others are not asked for it
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"tracking_uri=localhost:5000: 'localhost' is not a tracking URI scheme.*"
                       r"logger.mlflow.tracking_uri=http://localhost:5000"):  # fmt: skip
        check_trackers(compose("logger=mlflow", "logger.mlflow.tracking_uri=localhost:5000").logger)
    check_trackers(compose("logger=mlflow", "logger.mlflow.tracking_uri=https://mlflow.lab:443").logger)


# ----- the sender -----


class FakeTracker(Tracker):
    """Records what arrives; raises `ConnectionError` while `down`, `ValueError` for rows holding "bad"."""

    name = "fake"

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.calls: list[str] = []
        self.down = False
        self.attempts = 0
        self.gate = threading.Event()
        self.gate.set()

    def where(self) -> str:
        return "the fake server"

    def fix(self) -> str:
        return "start the fake server"

    def transient(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionError)

    def open(self) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionError("Connection refused")
        self.calls.append("open")

    def log_rows(self, rows: list[Row]) -> None:
        self.gate.wait()
        self.attempts += 1
        if self.down:
            raise ConnectionError("[Errno 111] Connection refused")
        if any("bad" in values for _, values, _ in rows):
            raise ValueError("metric key 'bad' rejected")
        self.rows.extend(rows)
        self.calls.append(f"rows:{len(rows)}")

    def finish(self, outcome: str) -> None:
        if self.down:
            raise ConnectionError("Connection refused")
        self.calls.append(f"finish:{outcome}")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_outage_warns_once_keeps_the_rows_and_sends_them_when_the_server_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="deepfake")
    tracker = FakeTracker()
    sender = Sender(tracker, retry_max_s=0.05)
    sender.start(opened=True)
    sender.add_row(1, {"train/loss": 1.0})
    wait_for(lambda: len(tracker.rows) == 1)
    tracker.down = True
    for step in range(2, 40):
        sender.add_row(step, {"train/loss": 1.0 / step})
    wait_for(lambda: tracker.attempts > 5)  # retried, with backoff, while down
    tracker.down = False
    sender.add_task("the run's end", lambda: tracker.finish("end"))
    assert sender.close(10.0)
    assert [step for step, _, _ in tracker.rows] == list(range(1, 40))  # nothing lost, in order
    assert tracker.calls[-1] == "finish:end" and len([c for c in tracker.calls if c.startswith("rows")]) < 39
    outage = [w for w in warnings_of(caplog) if "cannot reach" in w]
    assert outage == [
        "fake: cannot reach the fake server (connection refused). Training goes on: what is not sent is kept "
        "(up to 10000 log rows) and retried in the background. Fix: start the fake server"
    ]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_the_queue_is_bounded_and_the_loop_never_waits_on_a_stuck_tracker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = FakeTracker()
    tracker.gate.clear()  # the first send hangs, as a server that accepts and never answers
    sender = Sender(tracker, max_rows=5)
    sender.start(opened=True)
    sender.add_row(0, {"x": 0.0})
    wait_for(lambda: sender.pending_rows == 0)  # the thread holds row 0 and hangs
    started = time.perf_counter()
    for step in range(1, 101):
        sender.add_row(step, {"x": float(step)})
    assert time.perf_counter() - started < 0.5  # 100 calls, none waited on the network
    assert sender.pending_rows == 5 and sender.dropped == 95
    tracker.gate.set()
    assert sender.close(10.0)
    assert [step for step, _, _ in tracker.rows] == [0, 96, 97, 98, 99, 100]  # the newest are kept
    assert sum("the oldest are dropped" in w for w in warnings_of(caplog)) == 1


def test_a_refused_batch_is_skipped_and_a_refused_open_ends_the_tracker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = FakeTracker()
    sender = Sender(tracker)
    sender.start(opened=True)
    sender.add_row(1, {"bad": 1.0})
    sender.add_row(2, {"x": 2.0})  # queued behind: may go in the same refused batch, or the next one
    wait_for(lambda: sender.pending_rows == 0)
    sender.add_row(3, {"x": 3.0})
    assert sender.close(5.0)
    assert [step for step, _, _ in tracker.rows][-1] == 3
    assert sum("refused and skipped" in w for w in warnings_of(caplog)) == 1

    dead = FakeTracker()
    sender = Sender(dead)
    sender.add_task("the run's start", lambda: (_ for _ in ()).throw(ValueError("experiment deleted")))
    sender._queue[0].essential = True  # as the start task of a tracker that could not open at first
    sender.start(opened=True)
    sender.add_row(1, {"x": 1.0})
    assert sender.close(5.0)
    assert dead.rows == []
    assert any("nothing more is sent to it" in w and "experiment deleted" in w for w in warnings_of(caplog))


def test_close_gives_up_on_a_dead_server_within_its_timeout_and_says_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = FakeTracker()
    tracker.down = True
    sender = Sender(tracker, retry_max_s=0.05)
    sender.start(opened=False)  # never opened: the start warned already
    for step in range(7):
        sender.add_row(step, {"x": 1.0})
    sender.add_task("the run's files", lambda: None)
    started = time.monotonic()
    assert not sender.close(0.5)
    assert time.monotonic() - started < 2
    (gave_up,) = [w for w in warnings_of(caplog) if "gave up" in w]
    assert "not sent to the fake server: 7 log rows, the run's start, the run's files" in gave_up
    assert not any("cannot reach" in w for w in warnings_of(caplog))  # the start's warning was the one


# ----- the CSV table -----


def info_for(run_dir: Path, start_step: int = 0) -> RunInfo:
    return RunInfo(run_dir=run_dir, name="d/t", config={"seed": 1}, tags={}, start_step=start_step)


def test_metrics_csv_holds_step_rows_and_epoch_rows(tmp_path: Path) -> None:
    csv = CsvTracker(None, info_for(tmp_path))
    csv.open()
    csv.log_rows([(1, {"train/loss": 0.5, "train/lr": 0.001}, 0.0), (2, {"hw/cpu_percent": 50.0}, 0.0)])
    csv.log_rows([(2, {"train/loss": 0.25, "train/lr": 0.002}, 0.0)])  # appended: no new column
    csv.log_rows([(2, {"val/auc": 0.75, "val/eer": float("nan"), "epoch": 1.0}, 0.0)])  # new columns: rewrite
    text = (tmp_path / "metrics.csv").read_text().splitlines()
    assert text == [
        "step,epoch,train/loss,train/lr,val/auc,val/eer",
        "1,,0.5,0.001,,",
        "2,,0.25,0.002,,",
        "2,1,,,0.75,nan",
    ]  # hardware readings stay in TensorBoard; an undefined metric reads nan, an unlogged one is empty
    scalars = read_scalars(tmp_path / "metrics.csv")
    assert scalars["train/loss"] == {1: 0.5, 2: 0.25} and scalars["val/auc"] == {2: 0.75}


def test_a_resumed_csv_keeps_rows_up_to_the_checkpoint_and_drops_the_killed_process_rest(
    tmp_path: Path,
) -> None:
    first = CsvTracker(None, info_for(tmp_path))
    first.open()
    first.log_rows([(s, {"train/loss": 1.0 / s}, 0.0) for s in range(1, 8)])  # killed after step 7
    resumed = CsvTracker(None, info_for(tmp_path, start_step=5))  # its last checkpoint: step 5
    resumed.open()
    resumed.log_rows([(6, {"train/loss": 0.5}, 0.0)])
    assert [(r["step"], r["train/loss"]) for r in read_rows(tmp_path / "metrics.csv")][-3:] == [
        ("4", "0.25"), ("5", "0.2"), ("6", "0.5"),
    ]  # fmt: skip


def test_plots_come_from_metrics_csv_without_tensorboard(tmp_path: Path) -> None:
    csv = CsvTracker(None, info_for(tmp_path))
    csv.open()
    csv.log_rows([(s, {"train/loss": 1.0 / s}, 0.0) for s in range(1, 5)])
    csv.log_rows([(4, {"val/auc": 0.8, "val/loss": 0.4, "epoch": 1.0}, 0.0)])
    assert sorted(p.name for p in plot_run(tmp_path)) == ["loss.png", "val_metrics.png"]


# ----- what a run hands the trackers -----


def test_run_files_are_what_exists_and_best_pt_only_when_asked(tmp_path: Path) -> None:
    for name in ("metrics.json", "model_summary.json", "plots/loss.png", "eval/celebdf/metrics.json",
                 "eval/celebdf/roc.png", "eval/celebdf/predictions.csv", "checkpoints/best.pt", "checkpoints/last.pt"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    files = {
        (p.relative_to(tmp_path).as_posix(), folder) for p, folder in run_files(tmp_path, log_model=False)
    }
    assert files == {
        ("metrics.json", ""), ("model_summary.json", ""), ("plots/loss.png", "plots"),
        ("eval/celebdf/metrics.json", "eval/celebdf"), ("eval/celebdf/roc.png", "eval/celebdf"),
    }  # fmt: skip
    with_model = {p.name for p, _ in run_files(tmp_path, log_model=True)}
    assert "best.pt" in with_model and "last.pt" not in with_model


def test_saved_ids_take_the_file_and_let_the_checkpoint_win(tmp_path: Path) -> None:
    (tmp_path / "trackers.json").write_text('{"mlflow": {"run_id": "from-file"}, "wandb": {"id": "w1"}}')
    ids = saved_ids(tmp_path, {"trackers": {"mlflow": {"run_id": "from-checkpoint"}}})
    assert ids == {"mlflow": {"run_id": "from-checkpoint"}, "wandb": {"id": "w1"}}
    (tmp_path / "trackers.json").write_text("{not json")
    assert saved_ids(tmp_path, None) == {}


def test_run_info_tags_provenance_and_a_sweep_job(
    compose: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = to_config(compose("seed=7", "training.num_epochs=3"))
    info = run_info(
        cfg, tmp_path / "2026-01-02" / "03-04-05", "cuda:0 (H100)", ["seed=7", "training.num_epochs=3"]
    )
    assert info.name == "2026-01-02/03-04-05" and info.group is None
    assert info.tags["seed"] == "7" and info.tags["device"] == "cuda:0 (H100)" and info.tags["host"]
    assert info.tags["overrides"] == "seed=7 training.num_epochs=3" and "sweep" not in info.tags
    assert (
        info.params["training.num_epochs"] == "3" and info.params["data.augment.crop_scale"] == "[0.8, 1.0]"
    )

    class Sweep:
        mode = run_info_module.RunMode.MULTIRUN
        sweep = OmegaConf.create({"dir": "/runs/multirun/2026-01-02/03-04-05"})
        job = OmegaConf.create({"num": 4})

    monkeypatch.setattr(run_info_module.HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(run_info_module.HydraConfig, "get", staticmethod(lambda: Sweep))
    job = run_info(cfg, tmp_path / "4", "cpu", ["training.learning_rate=0.01"])
    assert job.tags["sweep"] == "/runs/multirun/2026-01-02/03-04-05" and job.tags["sweep_job"] == "4"
    assert job.tags["overrides"] == "training.learning_rate=0.01" and job.group == job.tags["sweep"]


def test_only_rank_zero_opens_trackers(compose: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = to_config(compose("logger=csv"))
    other = build_trackers(cfg, tmp_path, DistContext(rank=1, world_size=2), None, 0, "cpu", [])
    assert other.senders == [] and not (tmp_path / "metrics.csv").exists()
    main = build_trackers(cfg, tmp_path, DistContext(), None, 0, "cpu", [])
    assert main.names == ["csv"]
    main.scalars(1, {"train/loss": 0.5})
    main.epoch(1, 1, {"val/auc": 0.9})
    main.close("end")
    assert [r.get("epoch") for r in read_rows(tmp_path / "metrics.csv")] == [None, "1"]


def test_closing_no_trackers_is_free() -> None:
    nothing = Trackers([])
    nothing.scalars(1, {"x": 1.0})
    nothing.close("end")
    assert nothing.state_dict() == {}
