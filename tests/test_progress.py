"""Progress output: ETAs and rates from a controlled clock, rich bars (capture and pseudo-terminal), plain lines
in a real run whose stdout is a pipe, and what that run leaves behind (hw/ tags, hardware.json, plots)."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.reporting import progress as progress_module
from deepfake.reporting.progress import ProgressTracker
from deepfake.system.console import resolve_mode
from tests.conftest import FAST, ROOT, make_folder_dataset, run_cli

TRAIN = {"train/epoch_loss": 0.5, "train/epoch_img_per_s": 100.0}
VAL = {"val/auc": 0.9, "val/loss": 0.4}
READING = {
    "hw/cpu_percent": 12.0,
    "hw/ram_used_gb": 3.5,
    "hw/ram_percent": 20.0,
    "hw/proc_pss_gb": 0.75,
    "hw/disk_free_gb": 80.0,
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", c)
    return c


def test_etas_and_img_per_s_follow_host_counters(clock: Clock) -> None:
    tracker = ProgressTracker(3, 10, batch_size=4, mode="off")
    tracker.start_epoch(0)
    assert tracker.etas() == (None, None)
    clock.now += 10.0
    tracker.step(SimpleNamespace(batch_in_epoch=5))
    # 2 s per batch: 5 batches left in this epoch, then 2 epochs of 10 batches.
    assert tracker.etas() == pytest.approx((10.0, 50.0))
    assert tracker.img_per_s(clock.now) == pytest.approx(5 * 4 / 10.0)
    clock.now += 15.0
    tracker.step(SimpleNamespace(batch_in_epoch=10))
    line = tracker.end_epoch(TRAIN, VAL, took=25.0)
    assert line.startswith("epoch 1/3 | train loss 0.5000 | val auc 0.9000 loss 0.4000 | 100 img/s")
    assert line.endswith("| 25s | ETA 50s")  # two epochs left at the measured 25 s each
    tracker.start_epoch(1)
    clock.now += 4.0
    tracker.step(SimpleNamespace(batch_in_epoch=2))
    # Once an epoch is measured (validation included), later epochs use its duration.
    assert tracker.etas() == pytest.approx((16.0, 16.0 + 25.0))


def test_plain_lines_are_timed_and_carry_eta_rate_loss_and_hardware(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = ProgressTracker(2, 8, batch_size=16, mode="plain", every_n_seconds=30.0)
    tracker.start_epoch(0)
    tracker.log(1, {"train/loss": 0.6931, "train/lr": 1e-3})
    tracker.hardware(READING)
    with caplog.at_level("INFO", logger="deepfake"):
        clock.now += 10.0
        tracker.step(SimpleNamespace(batch_in_epoch=2))  # 10 s < 30 s: no line yet
        clock.now += 20.0
        tracker.step(SimpleNamespace(batch_in_epoch=4))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "epoch 1/2 batch 4/8 (50%) | loss 0.6931 | lr 1.00e-03 | 2 img/s | elapsed 30s | ETA epoch 30s, run 1m30s"
        " | cpu 12% | ram 3.5 GB (20%) | pss 0.75 GB | disk 80 GB free"
    ]


def test_rich_mode_renders_bars_etas_and_routes_log_lines_above_them() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with ProgressTracker(2, 5, batch_size=8, mode="rich", console=console) as tracker:
        tracker.start_epoch(0)
        tracker.log(1, {"train/loss": 0.25, "train/lr": 2e-3})
        tracker.hardware(READING)
        for b in range(1, 6):
            tracker.step(SimpleNamespace(batch_in_epoch=b))
        tracker.phase("validate")
        tracker.end_epoch(TRAIN, VAL, took=3.0)
        tracker.start_epoch(1)
        tracker.step(SimpleNamespace(batch_in_epoch=2))
    text = out.getvalue()
    assert "━" in text  # rich's bar glyph
    assert "epoch 2/2" in text and "batch" in text and "2/5" in text
    assert "ETA run" in text and "ETA epoch" in text
    assert "loss 0.2500" in text and "lr 2.00e-03" in text and "img/s" in text
    assert "cpu 12% | ram 3.5 GB (20%)" in text


def test_rich_mode_borrows_console_log_handlers_and_gives_them_back() -> None:
    handler = logging.StreamHandler(sys.__stdout__)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        for terminal in (False, True):
            console = Console(file=io.StringIO(), force_terminal=terminal)
            with ProgressTracker(1, 2, mode="rich", console=console):
                # On a terminal, log lines go through rich's stdout proxy, which prints them above the bars.
                assert (handler.stream is not sys.__stdout__) == terminal
            assert handler.stream is sys.__stdout__
    finally:
        root.removeHandler(handler)


@pytest.mark.cli
def test_auto_mode_draws_rich_bars_in_a_pseudo_terminal(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from types import SimpleNamespace
        from deepfake.reporting.progress import ProgressTracker
        with ProgressTracker(1, 4, batch_size=2, mode="auto") as t:
            print("mode", t.mode)
            t.start_epoch(0)
            for b in range(1, 5):
                t.step(SimpleNamespace(batch_in_epoch=b))
        """
    )
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the child has exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "mode rich" in text
    assert "━" in text and "ETA epoch" in text and "4/4" in text
    assert "\x1b[" in text  # cursor control: live redraws, which plain mode never emits


def test_auto_mode_is_plain_without_a_terminal() -> None:
    assert resolve_mode("auto", Console(file=io.StringIO())) == "plain"
    assert resolve_mode("off", Console(file=io.StringIO(), force_terminal=True)) == "off"


# -- one real run, stdout a pipe ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def piped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    base = tmp_path_factory.mktemp("piped")
    data = make_folder_dataset(base / "data")
    args = [
        str(ROOT / "train.py"),
        f"base_path={base}",
        "data=folder",
        f"data.root={data}",
        *FAST,
        "training.batch_size=4",
        "logging.progress=auto",
        "logging.every_n_seconds=0.001",
        "hardware.sample_every_n_seconds=0.05",
    ]
    proc = run_cli(args, cwd=base, timeout=300, env={"DEEPFAKE_CACHE": str(base / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p for p in (base / "outputs").glob("*/*") if p.is_dir()]
    return proc, run


@pytest.mark.cli
def test_plain_mode_when_stdout_is_not_a_terminal(
    piped_run: tuple[subprocess.CompletedProcess, Path],
) -> None:
    proc, run = piped_run
    assert "\r" not in proc.stdout and "\x1b[" not in proc.stdout
    progress = [line for line in proc.stdout.splitlines() if " batch " in line and "ETA epoch" in line]
    assert len(progress) >= 4, proc.stdout[-3000:]
    assert all("img/s" in line and "ETA epoch" in line and ", run " in line for line in progress)
    assert any("loss " in line and "cpu " in line and "ram " in line for line in progress)
    log = (run / "train.log").read_text()
    assert log.count("] - epoch 1/2 | train loss") == 1 and log.count("] - epoch 2/2 | train loss") == 1


@pytest.mark.cli
def test_run_records_hardware_and_hw_tags(piped_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, run = piped_run
    summary = json.loads((run / "hardware.json").read_text())
    assert summary["cpu_count"] >= 1 and summary["ram_gb"] > 0 and summary["disk_free_gb"] > 0
    if not torch.cuda.is_available():
        assert summary["device"] == "cpu" and "no CUDA" in summary["device_reason"]
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"hw/cpu_percent", "hw/ram_used_gb", "hw/ram_percent", "hw/proc_pss_gb"} <= tags
    pss = [e.value for e in events.Scalars("hw/proc_pss_gb")]
    assert all(0.05 < v < 64 for v in pss)


@pytest.mark.cli
def test_run_ends_with_plots_of_the_best_epoch(piped_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, run = piped_run
    metrics = json.loads((run / "metrics.json").read_text())
    rows = (run / "val_predictions.csv").read_text().splitlines()
    assert rows[0] == "path,video,label,prob" and len(rows) == 1 + 24  # every val image of the best epoch
    for name in ("loss.png", "val_metrics.png", "roc.png"):
        with Image.open(run / "plots" / name) as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 400
            assert np.asarray(im.convert("L")).std() > 5  # drawn on, not blank
    assert "plots: plots/loss.png, plots/reliability.png, plots/roc.png, plots/val_metrics.png" in proc.stdout
    assert metrics["best"]["epoch"] in (1, 2)
