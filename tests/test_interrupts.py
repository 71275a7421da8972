"""Signals: Ctrl-C stops cleanly and resumes; SIGKILL at any moment never leaves a broken file."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.runs.restore import read_archive
from deepfake.system.interrupt import GracefulInterrupt, TrainingInterrupted
from deepfake.training.runner import train
from tests.conftest import ROOT, make_folder_dataset, run_cli
from tests.runs import make_config, run_dir_of


def wait_for(condition: Callable[[], Any], timeout: float, poll: float = 0.001) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    return None


def temp_files(run: Path) -> list[Path]:
    return [p for d in ("checkpoints", "backups") for p in (run / d).glob(".*.tmp")]


@pytest.mark.slow
@pytest.mark.cli
def test_ctrl_c_saves_backs_up_and_prints_a_working_resume_command(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data")
    run = tmp_path / "run"
    args = [
        str(ROOT / "train.py"), f"base_path={tmp_path}", f"hydra.run.dir={run}", "training.auto_resume=true",
        "data=folder", f"data.root={data}", "data.num_workers=0", "data.img_size=32", "model=tiny",
        "training.batch_size=4", "training.num_epochs=2", "training.log_every_n_steps=1",
        "training.checkpoint.every_n_steps=1", "hardware.num_threads=1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: (run / "checkpoints" / "last.pt").is_file(), timeout=120, poll=0.01)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert last["saved_at"] == "interrupt" and 0 < last["global_step"] < 12
    (archive,) = (run / "backups").glob("*-interrupt.tar.gz")
    manifest = read_archive(archive)
    assert manifest["global_step"] == last["global_step"] and "checkpoints/last.pt" in manifest["files"]

    command = re.search(r"Resume with: (.+)$", output, re.MULTILINE)
    assert command, output[-2000:]
    words = shlex.split(command.group(1))
    assert words[:3] == ["python", str(ROOT / "train.py"), f"resume={run.resolve()}"]
    resumed = run_cli(words[1:], cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["stop_reason"], metrics["epochs_completed"], metrics["global_step"]) == (
        "completed",
        2,
        12,
    )
    assert f"resuming from {run / 'checkpoints' / 'last.pt'}" in (run / "train.log").read_text()

    # Cluster requeue: the original command again, with one more epoch, continues the same run by itself.
    again = run_cli([*args, "training.num_epochs=3"], cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["epochs_completed"], metrics["global_step"]) == (3, 18)
    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 19))
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("multirun"))  # no stray run dirs


def _train_in_child(config: Any) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    train(config)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_breaks_a_checkpoint(tmp_path: Path) -> None:
    """Ten kills: at random times, and the instant a checkpoint or backup temp file appears."""
    data = make_folder_dataset(tmp_path / "data")
    settings = {
        "training.num_epochs": 6,
        "training.grad_accum_steps": 1,
        "training.checkpoint.every_n_steps": 1,
        "training.ema.enabled": False,
        "backup.every_n_epochs": 1,
        "backup.keep_last": 2,
    }
    total_steps = 6 * 6
    rng = random.Random(0)
    fork = multiprocessing.get_context("fork")
    run: Path | None = None
    kills_during_writes = 0
    for i, mode in enumerate(["random", "checkpoint", "backup", "random", "checkpoint"] * 2):
        config = make_config(tmp_path, data, **settings, **({"resume": str(run)} if run else {}))
        child = fork.Process(target=_train_in_child, args=(config,))
        child.start()
        try:
            if run is None:
                run = wait_for(
                    lambda: next(iter((tmp_path / "outputs").glob("*/*/checkpoints/last.pt")), None), 120
                )
                assert run is not None, "the first run never wrote a checkpoint"
                run = run.parent.parent
            if mode == "random":
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                folder = run / ("checkpoints" if mode == "checkpoint" else "backups")
                wait_for(lambda f=folder, c=child: list(f.glob(".*.tmp")) or not c.is_alive(), 60, poll=0.002)
            with contextlib.suppress(ProcessLookupError):  # it may have finished (and been reaped) first
                os.kill(child.pid, signal.SIGKILL)
        finally:
            child.join(30)
        assert child.exitcode in (-signal.SIGKILL, 0), (
            f"kill {i} ({mode}): child failed with {child.exitcode}"
        )
        kills_during_writes += bool(temp_files(run))
        for ckpt in (run / "checkpoints").glob("*.pt"):
            torch.load(ckpt, weights_only=True)  # every checkpoint present loads
        for archive in (run / "backups").glob("*.tar.gz"):
            read_archive(archive)  # every backup present verifies
    assert kills_during_writes >= 1  # at least one kill landed mid-write and left its temp file behind

    train(make_config(tmp_path, data, **settings, resume=str(run)))
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["stop_reason"], metrics["global_step"]) == ("completed", total_steps)
    assert not temp_files(run)  # leftovers of killed writers are cleaned up on resume


def test_first_signal_asks_to_stop_and_a_second_aborts() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with GracefulInterrupt() as interrupt:
        assert not interrupt()
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt() and interrupt.signum == signal.SIGTERM
        assert TrainingInterrupted(interrupt.signum).exit_code == 143
        with pytest.raises(TrainingInterrupted) as aborted:
            os.kill(os.getpid(), signal.SIGINT)
    assert aborted.value.abort and aborted.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers are put back


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_second_ctrl_c_aborts_without_backup_and_a_crash_backs_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = make_folder_dataset(tmp_path / "data")
    original = TensorBoardLogger.scalars

    def twice_at_step_3(self: Any, at: int, values: dict[str, float]) -> None:
        original(self, at, values)
        if at == 3 and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(TensorBoardLogger, "scalars", twice_at_step_3)
        with pytest.raises(TrainingInterrupted) as aborted:
            train(make_config(tmp_path / "abort", data))
    assert aborted.value.abort
    run = run_dir_of(tmp_path / "abort")
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]["global_step"] == 2
    assert json.loads((run / "metrics.json").read_text())["stop_reason"].startswith("aborted")
    assert not list((run / "backups").glob("*.tar.gz"))  # aborting means now: no backup

    with pytest.raises(KeyError, match="val/nope"):
        # The start check would refuse this monitor up front; skip it to crash after the first epoch.
        train(
            make_config(tmp_path / "crash", data, **{"training.monitor": "val/nope", "check_on_start": False})
        )
    run = run_dir_of(tmp_path / "crash")
    (archive,) = (run / "backups").glob("*-crash.tar.gz")
    assert read_archive(archive)["reason"] == "crash"
    assert json.loads((run / "metrics.json").read_text())["stop_reason"].startswith("failed: KeyError")


@pytest.mark.cli
def test_a_script_that_dies_with_live_loader_workers_exits(tmp_path: Path) -> None:
    """Workers ignore SIGTERM (the main process owns the stop), so multiprocessing's exit hook alone would
    wait for them forever; the script must end with its own error and exit code instead."""
    data = make_folder_dataset(tmp_path / "data")
    script = tmp_path / "dies.py"
    script.write_text(
        "from deepfake.data import DataModule\n"
        f"dm = DataModule(kind='folder', root={str(data)!r}, img_size=16, num_workers=2, batch_size=4)\n"
        "dm.setup()\n"
        "batches = iter(dm.train_dataloader())\n"
        "next(batches)\n"
        "raise ValueError('boom with workers alive')\n"
    )
    result = run_cli([str(script)], cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith("ValueError: boom with workers alive")
    assert "killed by signal" not in result.stderr
