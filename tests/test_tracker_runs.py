"""Trackers on real runs: a real MLflow tracking server (its own environment: tests/mlflow_server.py), W&B in
offline mode read back from its run folder, and the CSV table beside them.

The MLflow tests share one server; the one that kills it runs last in this module.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepfake.config import CsvLoggerConfig, MlflowLoggerConfig, WandbLoggerConfig
from deepfake.errors import TrainingInterrupted
from deepfake.tracking import trackers as tracking_trackers
from deepfake.tracking.csv_tracker import read_rows
from deepfake.training import observers
from tests.mlflow_server import HOW, MlflowServer, server_command
from tests.runs import STEPS_PER_EPOCH, make_config, run_dir_of
from train import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cli,
]  # an MLflow server, and W&B's wandb-core service, are processes
EPOCHS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    command = server_command()
    if command is None and os.environ.get("CI"):
        pytest.fail(f"CI must test against a real MLflow server (.ci/run builds one): {HOW}")
    if command is None:
        pytest.skip(HOW)
    srv = MlflowServer(command, tmp_path_factory.mktemp("mlflow-server"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def mlflow_config(base: Path, data: Path, uri: str, **overrides: Any) -> Any:
    config = make_config(base, data, **{"training.num_epochs": EPOCHS, **overrides})
    config.logger.tensorboard = None
    config.logger.csv = CsvLoggerConfig()
    config.logger.mlflow = MlflowLoggerConfig(
        tracking_uri=uri, experiment_name="tests", tags={"team": "vision"}
    )
    config.logger.log_model = True
    return config


def interrupt_after(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """A real SIGINT right after optimizer step `step` reaches the trackers."""
    original = tracking_trackers.Trackers.scalars

    def scalars(self: tracking_trackers.Trackers, at: int, values: dict[str, float]) -> None:
        original(self, at, values)
        if at == step and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(tracking_trackers.Trackers, "scalars", scalars)


@pytest.fixture(scope="module")
def resumed(server: MlflowServer, data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-epoch run stopped by SIGINT in epoch 2, then resumed to the end, logging to CSV and MLflow."""
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("mlflow-run")
    stop_at = STEPS_PER_EPOCH + 1
    with pytest.MonkeyPatch.context() as patch:
        interrupt_after(patch, stop_at)
        with pytest.raises(TrainingInterrupted):
            train(mlflow_config(base, data, server.uri))
    run_dir = run_dir_of(base)
    ids = json.loads((run_dir / "trackers.json").read_text())
    client = MlflowClient(server.uri)
    run_id = ids["mlflow"]["run_id"]
    interrupted = client.get_run(run_id)
    train(mlflow_config(base, data, server.uri, resume=str(run_dir)))
    return {
        "run_dir": run_dir, "client": client, "run_id": run_id, "interrupted": interrupted, "stop_at": stop_at,
        "data": data,
    }  # fmt: skip


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(client: Any, run_id: str, folder: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, folder):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_mlflow_run_holds_params_tags_every_epoch_and_the_files(resumed: dict[str, Any]) -> None:
    client, run_id, run_dir = resumed["client"], resumed["run_id"], resumed["run_dir"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.num_epochs"] == str(EPOCHS) and params["model.architecture"] == "tiny"
    assert params["data.root"] == str(resumed["data"])
    assert params["logger.mlflow.experiment_name"] == "tests" and len(params) > 100
    tags = run.data.tags
    assert tags["run_dir"] == str(run_dir.resolve()) and tags["seed"] == "42" and tags["device"] == "cpu"
    assert (
        tags["host"] and tags["team"] == "vision" and tags["mlflow.runName"] == "/".join(run_dir.parts[-2:])
    )
    assert len(tags["git_commit"]) == 40 and tags["mlflow.source.git.commit"] == tags["git_commit"]
    # Validation metrics: one point per epoch, at the step that epoch ended, equal to metrics.csv's epoch rows.
    epoch_ends = [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
    auc = history(client, run_id, "val/auc")
    assert [step for step, _ in auc] == epoch_ends
    csv_rows = [r for r in read_rows(run_dir / "metrics.csv") if r.get("epoch")]
    assert [(int(r["step"]), int(r["epoch"])) for r in csv_rows] == [
        (s, e + 1) for e, s in enumerate(epoch_ends)
    ]
    assert [value for _, value in auc] == pytest.approx([float(r["val/auc"]) for r in csv_rows])
    final = json.loads((run_dir / "metrics.json").read_text())
    assert auc[-1][1] == pytest.approx(final["final"]["val/auc"])
    assert {"train/lr", "train/grad_norm", "val_ema/auc", "best/auc", "train/epoch_loss"} <= set(
        run.data.metrics
    )
    files = artifacts(client, run_id)
    assert {
        "metrics.json",
        "model_summary.json",
        "hardware.json",
        "train.log",
        "checkpoints/best.pt",
    } <= files
    assert {"plots/loss.png", "plots/val_metrics.png", "plots/roc.png"} <= files


def test_resume_continues_the_same_mlflow_run_at_its_step(resumed: dict[str, Any]) -> None:
    client, run_id, run_dir, stop_at = (
        resumed["client"],
        resumed["run_id"],
        resumed["run_dir"],
        resumed["stop_at"],
    )
    interrupted = resumed["interrupted"]
    assert interrupted.info.status == "KILLED"  # a signal: resumable, not failed
    assert [s for s, _ in history(client, run_id, "val/auc")][:1] == [STEPS_PER_EPOCH]
    assert len(client.search_runs([interrupted.info.experiment_id])) == 1  # no second MLflow run
    # Every train step logged once, in order: the resumed process went on from the interrupted step.
    assert [s for s, _ in history(client, run_id, "train/loss")] == list(
        range(1, STEPS_PER_EPOCH * EPOCHS + 1)
    )
    tags = client.get_run(run_id).data.tags
    assert tags["resumed_at_step"] == str(stop_at) and "resume=" in tags["resume_overrides"]
    import torch

    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["trackers"]["mlflow"]["run_id"] == run_id  # the id rides in every checkpoint too
    steps = [int(r["step"]) for r in read_rows(run_dir / "metrics.csv") if not r.get("epoch")]
    assert steps == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))  # the CSV continues the same way


def read_wandb(path: Path) -> list[Any]:
    """The records of a W&B transaction log (`run-<id>.wandb`): LevelDB-style 32 KiB blocks of records, each
    a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and a piece of a `Record` proto."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            break  # a record the service is still writing
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_folder_holds_config_metrics_and_files(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    config = make_config(tmp_path, data, **{"training.num_epochs": 2})
    config.logger.tensorboard = None
    config.logger.csv = CsvLoggerConfig()  # the curves in plots/ come from metrics.csv without TensorBoard
    config.logger.wandb = WandbLoggerConfig(mode="offline", project="tests", tags=["ffpp"])
    train(config)
    run_dir = run_dir_of(tmp_path)
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    wandb_id = json.loads((run_dir / "trackers.json").read_text())["wandb"]["id"]
    (log_file,) = folder.glob(f"run-{wandb_id}.wandb")
    deadline = time.monotonic() + 60  # W&B's service process writes the log; finish() does not wait for it
    records = read_wandb(log_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, "W&B never wrote the run's end"
        time.sleep(0.2)
        records = read_wandb(log_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config_seen = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config_seen["training"]["num_epochs"] == 2 and config_seen["model"]["architecture"] == "tiny"
    assert (
        config_seen["run_info"]["run_dir"] == str(run_dir.resolve())
        and config_seen["run_info"]["seed"] == "42"
    )
    assert (
        run.project == "tests"
        and list(run.tags) == ["ffpp"]
        and run.display_name == "/".join(run_dir.parts[-2:])
    )
    rows = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    epochs = [(row["global_step"], row["epoch"], row["val/auc"]) for row in rows if "val/auc" in row]
    final = json.loads((run_dir / "metrics.json").read_text())
    assert [(s, e) for s, e, _ in epochs] == [(STEPS_PER_EPOCH, 1), (2 * STEPS_PER_EPOCH, 2)]
    assert epochs[-1][2] == pytest.approx(final["final"]["val/auc"])
    steps = [row["global_step"] for row in rows if "train/loss" in row]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    saved = {f.path for r in records if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert {"metrics.json", "model_summary.json", "plots/loss.png", "plots/val_metrics.png"} <= saved
    assert (folder / "files" / "metrics.json").resolve() == (run_dir / "metrics.json").resolve()
    exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
    assert exits == [0]


def test_killing_the_server_mid_run_does_not_stop_training(
    server: MlflowServer,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Runs last: the server is SIGKILLed at the end of epoch 1; the run trains on, warns once, and ends
    within the flush timeout instead of waiting on the dead server."""
    original = observers.TrackerObserver.on_epoch_end

    def on_epoch_end(self: observers.TrackerObserver, run: Any, end: observers.EpochEnd) -> None:
        original(self, run, end)
        if end.epoch == 1:
            server.kill()

    monkeypatch.setattr(observers.TrackerObserver, "on_epoch_end", on_epoch_end)
    caplog.set_level(logging.INFO, logger="deepfake")
    started = time.monotonic()
    train(mlflow_config(tmp_path, data, server.uri, **{"logger.flush_timeout_s": 2.0}))
    elapsed = time.monotonic() - started
    run_dir = run_dir_of(tmp_path)
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["epochs_completed"] == EPOCHS and final["stop_reason"] == "completed"
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "mlflow" in r.getMessage()
    ]
    outage = [w for w in warnings if "cannot reach" in w]
    assert len(outage) == 1 and server.uri in outage[0] and "Training goes on" in outage[0]
    assert "mlflow server" in outage[0]  # the fix is named
    assert any("gave up" in w and "log rows" in w and "run's files" in w for w in warnings)
    assert elapsed < 120
    csv_epochs = [r for r in read_rows(run_dir / "metrics.csv") if r.get("epoch")]
    assert len(csv_epochs) == EPOCHS  # the local tracker never noticed
