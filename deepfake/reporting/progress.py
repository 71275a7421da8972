"""ProgressTracker: live rich bars in a terminal, plain timed lines in logs, and the per-epoch summary line.

The training loop calls `step(state)` once per optimizer update. It only copies host-side counters, so the
display never forces a device sync; the loss shown is the one from the last log step (`log()`), and
rendering happens on rich's refresh thread (rich mode) or at most every `every_n_seconds` (plain mode).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from deepfake.system.console import fmt_duration, resolve_mode
from deepfake.system.sampler import Reading, format_reading

log = logging.getLogger("deepfake")


def epoch_line(
    epoch: int,
    num_epochs: int,
    train: dict[str, float],
    val: dict[str, float],
    took: float,
    eta: float,
    peak_gb: float | None = None,
) -> str:
    """The one line per epoch that logs and train.log keep, whatever the progress mode."""
    parts = [f"epoch {epoch + 1}/{num_epochs}", f"train loss {train['train/epoch_loss']:.4f}"]
    shown = ("auc", "acc", "eer", "ap", "loss", "video_auc")
    parts.append("val " + " ".join(f"{k} {val[f'val/{k}']:.4f}" for k in shown if f"val/{k}" in val))
    if "val_ema/auc" in val:
        parts.append(f"ema auc {val['val_ema/auc']:.4f}")
    parts.append(f"{train['train/epoch_img_per_s']:.0f} img/s")
    if peak_gb is not None:
        parts.append(f"peak GPU {peak_gb:.2f} GB")
    parts.append(f"{fmt_duration(took)}")
    parts.append(f"ETA {fmt_duration(eta)}")
    return " | ".join(parts)


class ProgressTracker:
    """Epoch and batch progress with ETAs, loss, learning rate, images/s and a hardware line."""

    def __init__(
        self,
        num_epochs: int,
        num_batches: int,
        *,
        batch_size: int = 1,
        mode: str = "auto",
        every_n_seconds: float = 30.0,
        console: Console | None = None,
    ) -> None:
        self.num_epochs = num_epochs
        self.num_batches = max(1, num_batches)
        self.batch_size = batch_size
        self.every_n_seconds = every_n_seconds
        self.console = console or Console()
        self.mode = resolve_mode(mode, self.console)
        self.epoch = 0
        self.epochs_done = 0
        self.batch = 0
        self.phase_name = "train"
        self.values: dict[str, float] = {}
        self.reading: Reading = {}
        self.epoch_times: list[float] = []
        self._start_batch = 0
        self._seen = 0  # batches processed in this run, across epochs
        self._t_start = self._t_epoch = time.perf_counter()
        self._last_emit = self._t_epoch
        self._window = (self._t_epoch, 0)  # (time, batches seen) where the current img/s window begins
        self._img_per_s = 0.0
        self._live: Live | None = None
        self._redirected: list[tuple[logging.StreamHandler, Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> ProgressTracker:
        if self.mode == "rich" and self._live is None:
            self._live = Live(
                console=self.console,
                get_renderable=self.render,
                refresh_per_second=1,  # a training display needs no more; each redraw costs ~1 ms of GIL
                redirect_stdout=True,
                redirect_stderr=True,
            )
            before = (sys.stdout, sys.stderr)
            self._live.start()
            self._route_logging_through_live(before)
        return self

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            for handler, stream in self._redirected:
                handler.setStream(stream)
            self._redirected = []

    def __enter__(self) -> ProgressTracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _route_logging_through_live(self, before: tuple[Any, Any]) -> None:
        """Log handlers hold the real stdout/stderr; point them at the proxies rich installed (on a terminal
        only) so log lines print above the bars instead of tearing them."""
        for old, real, proxy in (
            (before[0], sys.__stdout__, sys.stdout),
            (before[1], sys.__stderr__, sys.stderr),
        ):
            if proxy is old:  # rich did not redirect this stream
                continue
            for handler in logging.getLogger().handlers:
                if type(handler) is logging.StreamHandler and handler.stream in (old, real):
                    self._redirected.append((handler, handler.setStream(proxy)))

    # -- callbacks from the loop ----------------------------------------------------------------------
    def start_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.batch, self._start_batch = epoch, start_batch, start_batch
        self.epochs_done = epoch
        self.phase_name = "train"
        now = time.perf_counter()
        self._t_epoch = self._last_emit = now
        self._window = (now, self._seen)
        self._img_per_s = 0.0

    def step(self, state: Any) -> None:
        """Per optimizer update (engine `on_step`): host integers and a clock read, nothing else."""
        batch = state.batch_in_epoch
        self._seen += batch - self.batch
        self.batch = batch
        if self.mode == "plain":
            now = time.perf_counter()
            if now - self._last_emit >= self.every_n_seconds:
                self._last_emit = now
                log.info(self.status_line(now))

    def log(self, step: int, values: dict[str, float]) -> None:
        """Values already read on the host at a log step (engine `log`): loss, lr, ..."""
        self.values = values

    def hardware(self, reading: Reading) -> None:
        """A sampler reading; called from the sampler thread, so it only swaps a reference."""
        self.reading = reading

    def phase(self, name: str) -> None:
        self.phase_name = name

    def end_epoch(
        self, train: dict[str, float], val: dict[str, float], took: float, peak_gb: float | None = None
    ) -> str:
        """Log the epoch's summary line (every mode) with the run's ETA from the mean epoch time."""
        self.epoch_times.append(took)
        remaining = self.num_epochs - self.epoch - 1
        eta = sum(self.epoch_times) / len(self.epoch_times) * remaining
        line = epoch_line(self.epoch, self.num_epochs, train, val, took, eta, peak_gb)
        self.batch = self.num_batches
        self.epochs_done = self.epoch + 1
        self.phase_name = "train"
        log.info(line)
        return line

    # -- estimates ------------------------------------------------------------------------------------
    def etas(self, now: float | None = None) -> tuple[float | None, float | None]:
        """(epoch ETA, run ETA) in seconds; None until a batch has been timed."""
        now = time.perf_counter() if now is None else now
        done = self.batch - self._start_batch
        if done <= 0:
            return None, None
        per_batch = (now - self._t_epoch) / done
        epoch_eta = per_batch * (self.num_batches - self.batch)
        later = self.num_epochs - self.epoch - 1
        if self.epoch_times:  # whole epochs, validation included
            per_epoch = sum(self.epoch_times) / len(self.epoch_times)
        else:
            per_epoch = per_batch * self.num_batches
        return epoch_eta, epoch_eta + later * per_epoch

    def img_per_s(self, now: float, min_window: float = 0.0) -> float:
        """Images/s since the window began (the last plain line, or >= `min_window` s ago for the bars)."""
        t0, seen0 = self._window
        if now - t0 >= min_window and now > t0 and self._seen > seen0:
            self._img_per_s = (self._seen - seen0) * self.batch_size / (now - t0)
            self._window = (now, self._seen)
        return self._img_per_s

    def stats_text(self, now: float, min_window: float = 0.0) -> str:
        parts = []
        if "train/loss" in self.values:
            parts.append(f"loss {self.values['train/loss']:.4f}")
        if "train/lr" in self.values:
            parts.append(f"lr {self.values['train/lr']:.2e}")
        parts.append(f"{self.img_per_s(now, min_window):.0f} img/s")
        parts.append(f"elapsed {fmt_duration(now - self._t_start)}")
        return " | ".join(parts)

    def status_line(self, now: float | None = None) -> str:
        """The plain-mode line: position, ETAs, live values and the latest hardware reading."""
        now = time.perf_counter() if now is None else now
        epoch_eta, run_eta = self.etas(now)
        pct = 100.0 * self.batch / self.num_batches
        parts = [
            f"epoch {self.epoch + 1}/{self.num_epochs} batch {self.batch}/{self.num_batches} ({pct:.0f}%)",
            self.stats_text(now),
            f"ETA epoch {_eta(epoch_eta)}, run {_eta(run_eta)}",
        ]
        hw = format_reading(self.reading)
        if hw:
            parts.append(hw)
        return " | ".join(parts)

    # -- rich rendering (refresh thread) --------------------------------------------------------------
    def render(self) -> RenderableType:
        """The current display; rich calls it on its refresh thread."""
        now = time.perf_counter()
        epoch_eta, run_eta = self.etas(now)
        frac = self.batch / self.num_batches
        grid = Table.grid(padding=(0, 1))
        for _ in range(4):
            grid.add_column()
        grid.add_row(
            Text(f"epoch {self.epoch + 1}/{self.num_epochs}", style="bold"),
            ProgressBar(total=self.num_epochs, completed=max(self.epochs_done, self.epoch + frac), width=40),
            Text(f"{self.epochs_done}/{self.num_epochs}"),
            Text(f"ETA run {_eta(run_eta)}", style="cyan"),
        )
        label = "validating" if self.phase_name == "validate" else "batch"
        grid.add_row(
            Text(label),
            ProgressBar(total=self.num_batches, completed=self.batch, width=40, pulse=label == "validating"),
            Text(f"{self.batch}/{self.num_batches}"),
            Text(f"ETA epoch {_eta(epoch_eta)}", style="cyan"),
        )
        lines: list[RenderableType] = [grid, Text(self.stats_text(now, min_window=1.0))]
        hw = format_reading(self.reading)
        if hw:
            lines.append(Text(hw, style="dim"))
        return Group(*lines)


def _eta(seconds: float | None) -> str:
    return "--" if seconds is None else fmt_duration(seconds)


def fan_out(
    sinks: Sequence[Any], tracker: ProgressTracker, global_step: Callable[[], int]
) -> tuple[Callable[[int, dict[str, float]], None], Callable[[dict[str, float]], None]]:
    """The loop's log callback and the sampler's reading callback, each feeding the scalar sinks (TensorBoard,
    the experiment trackers: anything with `scalars(step, values)`) and the progress tracker.

    The reading callback runs on the sampler thread: it only writes scalars and swaps the tracker's reference.
    """

    def on_log(step: int, values: dict[str, float]) -> None:
        for sink in sinks:
            sink.scalars(step, values)
        tracker.log(step, values)

    def on_reading(reading: dict[str, float]) -> None:
        step = global_step()
        for sink in sinks:
            sink.scalars(step, reading)
        tracker.hardware(reading)

    return on_log, on_reading
