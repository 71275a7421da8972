"""The cross-method matrix of a sweep over `data.train_methods`: `cross_method.csv` and `cross_method.png`.

A row is what a job trained on (its `data.train_methods` and `data.train_methods_mode`, read from the job's
`.hydra/config.yaml`): `Deepfakes`, `Deepfakes+Face2Face`, `all but Deepfakes` (leave-one-out) or `all`. A
column is a method with fakes in the sets the job's last step scored (`eval/<set>/metrics.json`, `per_method`),
named `<set>/<method>` when the jobs scored several sets. A cell is the row's metric on the column's fakes: frame
AUC by default (`--video` for video AUC, `--metric ap|acc` for the others). `mean` averages a row's cells,
`mean_unseen` only those of methods the row did not train on: the off-diagonal cells of a one-method row, the
held-out method of a leave-one-out row. Jobs that trained on the same methods (seeds) are averaged; `jobs` counts
them. The heatmap boxes the cells of methods a row trained on (the diagonal of a one-method sweep).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from deepfake.runs.fileio import atomic_write

METRICS = ("auc", "video_auc", "ap", "acc")
FILES = ("cross_method.csv", "cross_method.png")


@dataclass
class Job:
    """One job's training selection and the per-method results of the sets it scored."""

    name: str
    methods: list[str]
    mode: str
    results: dict[str, dict[str, dict[str, Any]]]  # set -> method -> per_method entry

    @property
    def label(self) -> str:
        if not self.methods:
            return "all"
        joined = "+".join(self.methods)
        return joined if self.mode == "only" else f"all but {joined}"


@dataclass
class CrossMethod:
    metric: str
    rows: list[str]
    columns: list[tuple[str, str]]  # (set, method)
    values: np.ndarray  # (rows, columns); NaN where no job of the row has the value
    seen: list[set[int]]  # per row, the column indices of methods it trained on
    jobs: list[int]  # jobs averaged into each row
    missing: list[str] = field(default_factory=list)  # jobs with a selection but no per-method results

    @property
    def labels(self) -> list[str]:
        sets = {s for s, _ in self.columns}
        return [m if len(sets) == 1 else f"{s}/{m}" for s, m in self.columns]

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, mean_unseen) per row, NaN where a row has no such cell."""
        mean = np.array([_nanmean(row) for row in self.values])
        unseen = np.array(
            [
                _nanmean([v for j, v in enumerate(row) if j not in seen])
                for row, seen in zip(self.values, self.seen, strict=True)
            ]
        )
        return mean, unseen


def _nanmean(values: Any) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def read_job(path: Path) -> Job | None:
    """A job folder's selection and results; None without a Hydra config (not a job)."""
    config_file = path / ".hydra" / "config.yaml"
    if not config_file.is_file():
        return None
    cfg = OmegaConf.load(config_file)
    methods = [str(m) for m in OmegaConf.select(cfg, "data.train_methods", default=None) or []]
    mode = str(OmegaConf.select(cfg, "data.train_methods_mode", default="only") or "only")
    out_dir = OmegaConf.select(cfg, "eval.out_dir", default=None, throw_on_resolution_failure=False)
    eval_dir = Path(str(out_dir)).expanduser() if out_dir else path / "eval"
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for metrics_file in sorted(eval_dir.glob("*/metrics.json")):
        try:
            per_method = json.loads(metrics_file.read_text()).get("per_method") or {}
        except (OSError, ValueError):
            continue
        fakes = {m: e for m, e in per_method.items() if isinstance(e, dict) and e.get("n_fake")}
        if fakes:
            results[metrics_file.parent.name] = fakes
    return Job(path.name, methods, mode, results)


def build(job_paths: list[Path], metric: str = "auc") -> CrossMethod | None:
    """The matrix of the jobs that selected methods; None when no job did (not a cross-method sweep)."""
    jobs = [j for j in (read_job(p) for p in job_paths) if j is not None and j.methods]
    if not jobs:
        return None
    scored = [j for j in jobs if j.results]
    columns = sorted({(s, m) for j in scored for s, methods in j.results.items() for m in methods})
    rows = list(dict.fromkeys(j.label for j in scored))
    values = np.full((len(rows), len(columns)), math.nan)
    counts = []
    seen = []
    for r, label in enumerate(rows):
        members = [j for j in scored if j.label == label]
        counts.append(len(members))
        for c, (set_name, method) in enumerate(columns):
            cells = [j.results.get(set_name, {}).get(method, {}).get(metric) for j in members]
            values[r, c] = _nanmean(cells)
        job = members[0]
        trained = set(job.methods) if job.mode == "only" else {m for _, m in columns} - set(job.methods)
        seen.append({c for c, (_, m) in enumerate(columns) if m in trained})
    missing = [j.name for j in jobs if not j.results]
    return CrossMethod(metric, rows, columns, values, seen, counts, missing)


def to_csv(matrix: CrossMethod) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["train_methods", *matrix.labels, "mean", "mean_unseen", "jobs", "metric"])
    mean, unseen = matrix.means()
    for r, label in enumerate(matrix.rows):
        cells = [_csv(v) for v in matrix.values[r]]
        writer.writerow([label, *cells, _csv(mean[r]), _csv(unseen[r]), matrix.jobs[r], matrix.metric])
    return buffer.getvalue()


def _csv(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else ""


def write(matrix: CrossMethod, out: Path) -> list[Path]:
    """cross_method.csv, and cross_method.png when there is a value to draw, each replaced atomically."""
    text = to_csv(matrix)
    atomic_write(out / FILES[0], lambda f: f.write(text.encode()))
    paths = [out / FILES[0]]
    if np.isfinite(matrix.values).any():
        from deepfake.reporting.figures import (
            save_png,  # matplotlib loads only when there is something to draw
        )

        paths.append(save_png(figure(matrix), out / FILES[1]))
    return paths


def figure(matrix: CrossMethod) -> Any:
    """The heatmap: rows trained on, columns tested on, then the two means; trained-on cells boxed."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    mean, unseen = matrix.means()
    grid = np.column_stack([matrix.values, mean, unseen]) if len(matrix.rows) else matrix.values
    labels = [*matrix.labels, "mean", "mean unseen"]
    finite = grid[np.isfinite(grid)]
    low = min(0.5, float(finite.min())) if finite.size else 0.0
    fig = Figure(
        figsize=(2.0 + 0.9 * len(labels), 1.6 + 0.55 * len(matrix.rows)), dpi=100, layout="constrained"
    )
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=low, vmax=1.0, aspect="auto")
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            value = grid[r, c]
            text = f"{value:.3f}" if math.isfinite(value) else "-"
            dark = math.isfinite(value) and value < (low + 1.0) / 2
            ax.text(c, r, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        for c in matrix.seen[r]:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.axvline(len(matrix.columns) - 0.5, color="white", linewidth=4)  # the means apart from the cells
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.rows)), matrix.rows, fontsize=8)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(f"{matrix.metric} per test method (boxed: methods the row trained on)", fontsize=10)
    fig.colorbar(image, ax=ax, label=matrix.metric)
    return fig


def render(matrix: CrossMethod) -> str:
    """The matrix as plain text for the terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Cross-method {matrix.metric} (rows: trained on; * trained on)", box=box.MARKDOWN)
    for column in ("trained on", *matrix.labels, "mean", "mean unseen"):
        table.add_column(column, justify="left" if column == "trained on" else "right")
    mean, unseen = matrix.means()
    for r, label in enumerate(matrix.rows):
        cells = [
            ("-" if not math.isfinite(v) else f"{v:.4f}") + ("*" if c in matrix.seen[r] else "")
            for c, v in enumerate(matrix.values[r])
        ]
        table.add_row(label, *cells, *(f"{v:.4f}" if math.isfinite(v) else "-" for v in (mean[r], unseen[r])))
    console = Console(file=io.StringIO(), width=10_000, color_system=None, force_terminal=False)
    console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines() if line.strip()]
    if matrix.missing:
        lines.append(
            f"jobs without per-method test results (not in the matrix): {', '.join(matrix.missing)}; a job scores "
            "its test split with eval.score_test_split=true, or the sets of data.test_sets"
        )
    return "\n".join(lines)
