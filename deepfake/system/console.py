"""What a person at the console sees, whichever room draws it: the progress mode, how durations read, the
items-of-a-total progress (`ItemProgress`) extract.py and predict.py show, and how to type the project's other
commands.

Training (`deepfake.reporting.progress`), extraction (`deepfake.extraction.report`) and prediction
(`deepfake.prediction.report`) follow one convention: rich bars where a person watches, plain timed lines in
logs, SLURM and CI, nothing with `progress=off`.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deepfake.choices import PROGRESS

MODES = PROGRESS


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def resolve_mode(mode: str, console: Console) -> str:
    """`auto`: bars where a person watches (a terminal or a notebook), plain lines in logs, SLURM and CI."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    live_ok = (console.is_terminal and not console.is_dumb_terminal) or console.is_jupyter
    return "rich" if live_ok else "plain"


class ItemProgress:
    """Items done of a known total, a rate and an ETA from the mean item time: a rich bar, or a plain line every
    `every_n_seconds` (and at the last item) in `log`, or nothing (mode `off`). The rate counts `unit`s (faces
    written, say) when it is not the items themselves."""

    def __init__(
        self,
        total: int,
        items: str,
        unit: str | None = None,
        mode: str = "auto",
        every_n_seconds: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.total, self.done, self.count = total, 0, 0
        self.items, self.unit = items, unit or items
        self.every = every_n_seconds
        self.mode = resolve_mode(mode, Console())
        self.log = log or logging.getLogger("deepfake")
        self._t0 = self._last = time.perf_counter()
        self._bars: Progress | None = None
        self._task = None

    def __enter__(self) -> ItemProgress:
        if self.mode == "rich":
            self._bars = Progress(
                TextColumn(self.items), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"), TimeRemainingColumn(), refresh_per_second=2,
            )  # fmt: skip
            self._bars.start()
            self._task = self._bars.add_task(self.items, total=self.total, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def rate(self, now: float) -> float:
        return self.count / max(now - self._t0, 1e-9)

    def line(self, now: float) -> str:
        eta = (now - self._t0) / self.done * (self.total - self.done) if self.done else None
        pct = 100.0 * self.done / max(self.total, 1)
        counted = f"{self.count} {self.unit}, " if self.unit != self.items else ""
        return (
            f"{self.items} {self.done}/{self.total} ({pct:.0f}%) | {counted}{self.rate(now):.1f} {self.unit}/s | "
            f"elapsed {fmt_duration(now - self._t0)} | ETA {'--' if eta is None else fmt_duration(eta)}"
        )

    def update(self, count: int = 1) -> None:
        """One more item finished, adding `count` to the rate's tally (1: the item itself)."""
        self.done += 1
        self.count += count
        now = time.perf_counter()
        if self._bars is not None:
            self._bars.update(self._task, completed=self.done, rate=f"{self.rate(now):.1f} {self.unit}/s")
        elif self.mode == "plain" and (now - self._last >= self.every or self.done == self.total):
            self._last = now
            self.log.info(self.line(now))


def command_for(script: str) -> str:
    """How to start another of the project's commands (train, evaluate, predict, extract) the way this process
    was started: `python <dir>/evaluate.py` beside a repository script run by Hydra, else the console script
    the package installs (`deepfake-evaluate`), which works from any directory."""
    from hydra.core.hydra_config import HydraConfig

    here = Path(sys.argv[0])
    sibling = here.with_name(f"{script}.py")
    if HydraConfig.initialized() and here.suffix == ".py" and sibling.is_file():
        return f"python {shlex.quote(str(sibling))}"
    return f"deepfake-{script}"
