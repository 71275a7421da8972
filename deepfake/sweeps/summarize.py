"""One table of a sweep: every job's overrides, best and final metrics, run time and status.

`python -m deepfake.summarize <sweep dir>` (re)builds `summary.csv`, `summary.md` and `summary.png` in the
sweep directory from what the jobs left there (`.hydra/overrides.yaml`, `metrics.json`), so it works on a
finished sweep, a running one, or one that was killed; the sweep callback (deepfake.sweeps.callbacks) calls the same
code after every job and at the end. A sweep whose jobs select methods (`data.train_methods`) also gets the
cross-method matrix, `cross_method.csv` and `cross_method.png` (`deepfake.sweeps.cross_method`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

from deepfake.errors import UserError
from deepfake.exits import run_reporting_errors
from deepfake.runs.fileio import atomic_write
from deepfake.sweeps import cross_method

log = logging.getLogger("deepfake")

#: Final metrics shown per job (when a job has them), in this order; every other val metric goes to the CSV only.
SHOWN = ("val/auc", "val/video_auc", "val/acc", "val/eer", "val/ap", "val/loss", "train/epoch_loss")
FILES = ("summary.csv", "summary.md", "summary.png", *cross_method.FILES)
#: metrics.json `stop_reason` prefixes and the status they mean.
STATUSES = (
    ("completed", "completed"),
    ("early stopping", "stopped early"),
    ("interrupted", "interrupted"),
    ("failed", "failed"),
    ("aborted", "failed"),
)


@dataclass
class JobRow:
    """One job directory of the sweep, as its files describe it."""

    job: str
    path: Path
    overrides: list[str]
    status: str  # completed | stopped early | interrupted | failed | unfinished
    monitor: str | None = None
    mode: str | None = None
    best: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    duration_s: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class SweepSummary:
    sweep_dir: Path
    rows: list[JobRow]
    monitor: str | None
    mode: str | None
    varying: list[str]  # override keys that differ between jobs
    optuna: dict[str, Any] | None = None  # optimization_results.yaml, when the Optuna sweeper wrote one
    cross_method: cross_method.CrossMethod | None = None  # the matrix, when the jobs selected methods

    @property
    def failed(self) -> list[JobRow]:
        return [r for r in self.rows if r.failed]

    @property
    def best(self) -> JobRow | None:
        """The job with the best monitored value (jobs that monitored another metric are not compared)."""
        scored = [r for r in self.rows if r.monitor == self.monitor and _finite(r.best)]
        if not scored:
            return None
        pick = max if self.mode != "min" else min
        return pick(scored, key=lambda r: r.best)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Sub-folders that Hydra made for jobs (they hold `.hydra/overrides.yaml`), by job number."""
    found = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(found, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def read_job(path: Path) -> JobRow:
    overrides = [str(o) for o in OmegaConf.load(path / ".hydra" / "overrides.yaml")]
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        return JobRow(job=path.name, path=path, overrides=overrides, status="unfinished")
    try:
        m = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as e:
        return JobRow(path.name, path, overrides, "failed", error=f"unreadable metrics.json: {e}")
    reason = str(m.get("stop_reason", ""))
    best = m.get("best") or {}
    status = next((name for prefix, name in STATUSES if reason.startswith(prefix)), reason or "unknown")
    error = "" if status == "completed" else reason.removeprefix("failed:").strip()
    final = {k: float(v) for k, v in (m.get("final") or {}).items() if isinstance(v, int | float)}
    return JobRow(
        job=path.name,
        path=path,
        overrides=overrides,
        status=status,
        monitor=m.get("monitor"),
        mode=m.get("mode"),
        best=_float(best.get("value")),
        best_epoch=best.get("epoch"),
        epochs=m.get("epochs_completed"),
        duration_s=_float(m.get("duration_s")),
        final=final,
        error=error,
    )


def collect(sweep_dir: str | Path) -> SweepSummary:
    """Read every job of a sweep directory; raise UserError when it is not one."""
    sweep_dir = Path(sweep_dir).expanduser()
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} does not exist")
    rows = [read_job(p) for p in job_dirs(sweep_dir)]
    if not rows:
        raise UserError(
            f"{sweep_dir} holds no sweep jobs (folders with .hydra/overrides.yaml); pass the folder that "
            "`python train.py -m ...` printed, e.g. multirun/<date>/<time>"
        )
    monitored = [r for r in rows if r.monitor]
    monitor = monitored[0].monitor if monitored else None
    mode = monitored[0].mode if monitored else None
    optuna_file = sweep_dir / "optimization_results.yaml"
    optuna = OmegaConf.to_container(OmegaConf.load(optuna_file)) if optuna_file.is_file() else None
    return SweepSummary(sweep_dir, rows, monitor, mode, _varying(rows), optuna)


def _varying(rows: Sequence[JobRow]) -> list[str]:
    values: dict[str, set[str]] = {}
    for r in rows:
        for o in r.overrides:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    # A key some jobs lack varies too (the job ran with the default).
    return [k for k, v in values.items() if len(v) > 1 or any(not _has(r, k) for r in rows)]


def _has(row: JobRow, key: str) -> bool:
    return any(o.partition("=")[0] == key for o in row.overrides)


def write(summary: SweepSummary) -> list[Path]:
    """summary.csv, summary.md and summary.png in the sweep directory, each replaced atomically."""
    out = summary.sweep_dir
    csv_text = to_csv(summary)
    atomic_write(out / "summary.csv", lambda f: f.write(csv_text.encode()))
    md = to_markdown(summary)
    atomic_write(out / "summary.md", lambda f: f.write(md.encode()))
    paths = [out / "summary.csv", out / "summary.md"]
    if any(_finite(r.best) for r in summary.rows):
        from deepfake.reporting.figures import (
            save_png,  # matplotlib loads only when there is something to draw
        )

        paths.append(save_png(figure(summary), out / "summary.png"))
    return paths


def summarize(sweep_dir: str | Path, metric: str = "auc") -> SweepSummary:
    """Collect and write, with the cross-method matrix of `metric` when the jobs selected methods; returns the
    summary (for printing)."""
    summary = collect(sweep_dir)
    write(summary)
    summary.cross_method = cross_method.build([r.path for r in summary.rows], metric)
    if summary.cross_method is not None:
        cross_method.write(summary.cross_method, summary.sweep_dir)
    return summary


def to_csv(summary: SweepSummary) -> str:
    extra = sorted({k for r in summary.rows for k in r.final if k.startswith("val")} - set(SHOWN))
    metrics = [k for k in SHOWN if any(k in r.final for r in summary.rows)] + extra
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["job", "overrides", "status", "monitor", "best", "best_epoch", "epochs", "duration_s"]
    writer.writerow([*header, *(f"final {k}" for k in metrics), "error", "path"])
    for r in summary.rows:
        writer.writerow(
            [
                r.job,
                " ".join(r.overrides),
                r.status,
                r.monitor or "",
                _csv_num(r.best),
                r.best_epoch if r.best_epoch is not None else "",
                r.epochs if r.epochs is not None else "",
                _csv_num(r.duration_s),
                *(_csv_num(r.final.get(k)) for k in metrics),
                r.error,
                str(r.path),
            ]
        )
    return buffer.getvalue()


def table(summary: SweepSummary) -> Table:
    """The summary as a markdown-style table, one line per job; the best job is marked with *."""
    monitor = summary.monitor or "monitor"
    metrics = [k for k in SHOWN if any(k in r.final for r in summary.rows) and k != summary.monitor]
    t = Table(box=box.MARKDOWN)
    for column in ("job", "overrides", "status", f"best {monitor}", "epoch", *metrics, "time"):
        left = column in ("job", "overrides", "status")
        t.add_column(column, justify="left" if left else "right", no_wrap=True)
    best = summary.best
    for r in summary.rows:
        status = _clip(f"failed: {r.error}") if r.failed and r.error else r.status
        t.add_row(
            f"{r.job}{' *' if r is best else ''}",
            shown_overrides(r, summary.varying) or "-",
            status,
            _fmt(r.best),
            str(r.best_epoch) if r.best_epoch is not None else "-",
            *(_fmt(r.final.get(k)) for k in metrics),
            _duration(r.duration_s),
        )
    return t


def shown_overrides(row: JobRow, keys: Sequence[str]) -> str:
    """The job's overrides of `keys`, numbers shortened to 4 significant digits (the CSV keeps them whole)."""
    parts = []
    for o in row.overrides:
        key, _, value = o.partition("=")
        if key in keys:
            parts.append(f"{key}={_short(value)}")
    return " ".join(parts)


def _short(value: str) -> str:
    if any(c in value for c in ".eE"):
        try:
            return f"{float(value):.4g}"
        except ValueError:
            return value
    return value


def table_lines(summary: SweepSummary) -> list[str]:
    console = Console(file=io.StringIO(), width=10_000, color_system=None, force_terminal=False)
    console.print(table(summary))
    return [line.rstrip() for line in console.file.getvalue().splitlines() if line.strip()]


def render(summary: SweepSummary) -> str:
    """A title line and the table, as plain text (the table is summary.md's too)."""
    title = f"Sweep {summary.sweep_dir}: {len(summary.rows)} jobs, {len(summary.failed)} failed"
    return "\n".join([title, *table_lines(summary)])


def to_markdown(summary: SweepSummary) -> str:
    lines = [f"# Sweep summary: {summary.sweep_dir}", ""]
    common = sorted(
        {o for r in summary.rows for o in r.overrides if o.partition("=")[0] not in summary.varying}
    )
    if common:
        lines += [f"Common overrides: `{' '.join(common)}`", ""]
    lines += [*table_lines(summary), ""]
    best = summary.best
    if best is not None:
        lines.append(
            f"Best: job {best.job} with {summary.monitor} {_fmt(best.best)} at epoch {best.best_epoch} "
            f"(`{shown_overrides(best, summary.varying) or 'defaults'}`), {best.path}"
        )
    if summary.optuna is not None:
        lines += ["", "## Optuna (optimization_results.yaml)", ""]
        lines.append(f"Best value: {summary.optuna.get('best_value')}")
        for key, value in (summary.optuna.get("best_params") or {}).items():
            lines.append(f"- `{key}={value}`")
    for r in summary.failed:
        lines += ["", f"Job {r.job} failed: {r.error or 'see its train.log'} ({r.path / 'train.log'})"]
    return "\n".join(lines) + "\n"


def figure(summary: SweepSummary) -> Any:
    """Horizontal bars of each job's best monitored value, labelled with it (final value as a dot); the axis
    spans the values, not 0 to them, so close jobs stay apart. Failed jobs get no bar and say their status."""
    from matplotlib.figure import Figure

    rows = summary.rows
    labels = [
        "\n".join([f"job {r.job}", *textwrap.wrap(shown_overrides(r, summary.varying), 48)]) for r in rows
    ]
    height = 1.5 + 0.22 * sum(label.count("\n") + 1 for label in labels)
    fig = Figure(figsize=(10, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(rows)))
    finals = [
        (i, r.final[summary.monitor]) for i, r in enumerate(rows) if _finite(r.final.get(summary.monitor))
    ]
    values = [r.best for r in rows if _finite(r.best)] + [v for _, v in finals]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.15 * (high - low) or 0.05 * (abs(high) or 1.0)
    left, right = low - pad, high + pad
    scored = [i for i, r in enumerate(rows) if _finite(r.best)]
    bars = ax.barh(
        scored,
        [rows[i].best - left for i in scored],
        left=left,
        color="tab:blue",
        label=f"best {summary.monitor}",
    )
    ax.bar_label(bars, labels=[f"{rows[i].best:.4f}" for i in scored], padding=3, fontsize=8)
    if finals:
        ax.plot([v for _, v in finals], [i for i, _ in finals], "o", color="tab:orange", label="final")
    for i, r in enumerate(rows):
        if not _finite(r.best):
            ax.text(left, i, f" {r.status}", va="center", color="tab:red")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left, right + pad)  # room for the value labels
    ax.set_xlabel(f"{summary.monitor or 'monitored metric'} (the axis starts at {left:.4g}, not 0)")
    ax.set_title(f"{summary.monitor} per job")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _clip(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _float(x: Any) -> float | None:
    try:
        return float(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def _fmt(x: float | None) -> str:
    return f"{x:.4f}" if _finite(x) else "-"


def _csv_num(x: float | None) -> str:
    return repr(float(x)) if _finite(x) else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepfake.summarize",
        description="Rebuild summary.csv, summary.md and summary.png of a sweep (finished or not).",
    )
    parser.add_argument("sweep_dir", help="the sweep folder, e.g. multirun/2026-11-26/10-20-00-123456")
    parser.add_argument(
        "--metric",
        choices=cross_method.METRICS,
        default="auc",
        help="the cross-method matrix's cells (sweeps over data.train_methods): frame auc (default), video_auc, "
        "ap or acc",
    )
    parser.add_argument(
        "--video", action="store_true", help="the matrix in video AUC (same as --metric video_auc)"
    )
    args = parser.parse_args(argv)
    metric = "video_auc" if args.video else args.metric
    summary = run_reporting_errors(summarize, args.sweep_dir, metric)
    print(render(summary))
    if summary.cross_method is not None:
        print(cross_method.render(summary.cross_method))
    print(f"wrote {', '.join(f for f in FILES if (summary.sweep_dir / f).is_file())} in {summary.sweep_dir}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
