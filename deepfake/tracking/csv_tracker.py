"""`logger=csv`: `<run dir>/metrics.csv`, the run's scalars as one table.

Columns: `step` (the optimizer step), `epoch` (set on the row that closes an epoch, empty on per-step rows),
then every metric name in sorted order. A row per logged train step (`train/loss`, `train/lr`, ...) and a row
per epoch (`val/*`, `best/*`, `train/epoch_*`); hardware readings stay in TensorBoard and hardware.json. A
value that was logged but undefined (an AUC with one class) reads `nan`; an empty cell was not logged.
Rows are appended as they come; a new column rewrites the file (atomically) with the wider header. A resumed
run keeps the rows up to its checkpoint's step and drops any a killed process wrote after it.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from deepfake.runs.fileio import atomic_write
from deepfake.tracking.run_info import RunInfo
from deepfake.tracking.tracker import Row, Tracker

FILE = "metrics.csv"
FIXED = ("step", "epoch")


class CsvTracker(Tracker):
    name = "csv"

    def __init__(self, cfg: Any, info: RunInfo) -> None:
        self.path = info.run_dir / FILE
        self.start_step = info.start_step
        self.rows: list[dict[str, str]] = []
        self.columns: list[str] = []

    def where(self) -> str:
        return str(self.path)

    def fix(self) -> str:
        return f"free space or permissions on {self.path.parent}"

    def open(self) -> None:
        kept = [r for r in read_rows(self.path) if _int(r.get("step")) <= self.start_step]
        self.rows = []
        self.columns = []
        self._add(kept)
        self._rewrite()

    def log_rows(self, rows: list[Row]) -> None:
        new = []
        for step, values, _ in rows:
            row = {k: _text(v) for k, v in values.items() if not k.startswith("hw/") and k != "epoch"}
            if not row:
                continue
            epoch = values.get("epoch")
            new.append({"step": str(step), "epoch": "" if epoch is None else str(int(epoch)), **row})
        if not new:
            return
        if self._add(new):
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, self.columns, lineterminator="\n").writerows(new)

    def _add(self, rows: list[dict[str, str]]) -> bool:
        """Keep `rows`; True if they brought new columns."""
        self.rows.extend(rows)
        names = {k for r in rows for k in r} - set(self.columns) - set(FIXED)
        if not names and self.columns:
            return False
        metrics = sorted(names | set(self.columns[len(FIXED) :]))
        self.columns = [*FIXED, *metrics]
        return True

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, lambda f: f.write(buffer.getvalue().encode()))


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]


def read_scalars(path: Path) -> dict[str, dict[int, float]]:
    """Every metric of a metrics.csv as {name: {step: value}} (the last row wins for a repeated step)."""
    out: dict[str, dict[int, float]] = {}
    for row in read_rows(path):
        step = _int(row.get("step"))
        for key, value in row.items():
            if key not in FIXED:
                out.setdefault(key, {})[step] = float(value)
    return out


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _text(value: float) -> str:
    value = float(value)
    return "nan" if math.isnan(value) else repr(value)
