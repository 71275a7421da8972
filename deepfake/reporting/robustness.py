"""What a robustness evaluation leaves in `<set>/`: robustness.csv, robustness_predictions.csv.gz, robustness.png
(AUC per perturbation type against level beside a type x level heatmap), the printed table, and with
`perturb.examples=N` the example faces under every setting (`robustness_examples/`, with `grid.png`).

matplotlib's object API only (`Figure`), like `reporting.figures`: headless, no pyplot state.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from rich import box
from rich.console import Console
from rich.table import Table

from deepfake.data.perturbed import PerturbedCrops, require_videos
from deepfake.data.samples import Sample
from deepfake.evaluation.robustness import COLUMNS, setting_row, summarize
from deepfake.perturbations.protocol import CLEAN, Setting, settings
from deepfake.reporting.figures import save_png
from deepfake.runs.fileio import atomic_write

log = logging.getLogger("deepfake")
Row = Mapping[str, object]  # a robustness.csv row: type, level, param, frame_auc, video_auc, ap, eer, n
TILE = 96  # pixels per face in the examples grid (the PNG files beside it keep each face's own size)


def _auc(row: Row, metric: str) -> float:
    value = row[metric]
    return float(value) if value is not None else math.nan


def robustness_figure(rows: Sequence[Row], title: str, metric: str = "video_auc") -> Figure:
    """Left: AUC against level, one line per type, the clean AUC dashed. Right: the type x level heatmap."""
    clean = next((_auc(r, metric) for r in rows if r["type"] == "clean"), math.nan)
    types = list(dict.fromkeys(str(r["type"]) for r in rows if r["type"] != "clean"))
    levels = sorted({int(r["level"]) for r in rows if r["type"] != "clean"})  # type: ignore[call-overload]
    grid = np.full((len(types), len(levels)), math.nan)
    for r in rows:
        if r["type"] != "clean":
            grid[types.index(str(r["type"])), levels.index(int(r["level"]))] = _auc(r, metric)  # type: ignore[call-overload]
    fig = Figure(figsize=(11, 0.45 * max(len(types), 6) + 1.8), dpi=100)
    lines, heat = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    for k, name in enumerate(types):
        lines.plot(levels, grid[k], marker="o", label=name)
    if not math.isnan(clean):
        lines.axhline(clean, color="black", linestyle="--", linewidth=1, label=f"clean {clean:.3f}")
    lines.set_xticks(levels)
    lines.set_xlabel("level (1 = mildest)")
    lines.set_ylabel(metric.replace("_auc", " AUC"))
    lines.set_ylim(min(0.45, np.nanmin(grid, initial=1.0) - 0.02), 1.005)
    lines.grid(alpha=0.3)
    lines.legend(fontsize=8, loc="lower left", ncol=2)
    image = heat.imshow(grid, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    heat.set_xticks(range(len(levels)), [str(lv) for lv in levels])
    heat.set_yticks(range(len(types)), types)
    heat.set_xlabel("level")
    for (i, j), value in np.ndenumerate(grid):
        dark = not math.isnan(value) and (value < 0.6 or value > 0.93)  # the colour map's dark ends
        text = "n/a" if math.isnan(value) else f"{value:.3f}"
        heat.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    fig.colorbar(image, ax=heat, fraction=0.05)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def safe_name(text: str) -> str:
    """A file-name-safe version of a face's name: letters, digits, '.', '_' and '-' only, never '..'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "face"
    return cleaned[:80]


def save_image(image: np.ndarray, path: Path) -> Path:
    """A uint8 (H, W, 3) image as a lossless PNG, written atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def examples_figure(faces: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], title: str) -> Figure:
    """A row per type; per face a block of columns, its clean crop then each level (tiles of TILE pixels)."""
    settings = list(faces[0])
    types = list(dict.fromkeys(s.split("-")[0] for s in settings if s != CLEAN))
    levels = sorted({int(s.split("-")[1]) for s in settings if s != CLEAN})
    width = len(levels) + 1
    inch = 0.9
    fig = Figure(figsize=(inch * width * len(faces) + 0.5, inch * len(types) + 0.9), dpi=TILE / inch)
    axes = fig.subplots(len(types), width * len(faces), squeeze=False)
    for f, (face, name) in enumerate(zip(faces, names, strict=True)):
        for t, kind in enumerate(types):
            for c, key in enumerate([CLEAN, *(f"{kind}-{lv}" for lv in levels)]):
                ax = axes[t, f * width + c]
                ax.set_xticks([])
                ax.set_yticks([])
                if key in face:
                    ax.imshow(face[key])
                if t == 0:
                    head = "clean" if c == 0 else f"level {levels[c - 1]}"
                    ax.set_title(
                        f"{name}\n{head}" if c == 0 else head, fontsize=7, loc="left" if c == 0 else "center"
                    )
                if c == 0 and f == 0:
                    ax.set_ylabel(kind, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return fig


def write_rows(path: Path, rows: Sequence[Row]) -> Path:
    """robustness.csv: one row per setting, the clean one first; floats as Python writes them (exact)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def write_predictions(path: Path, scored: Sequence[tuple[Setting, Sequence[Sample], np.ndarray]]) -> Path:
    """robustness_predictions.csv.gz: every setting's probabilities (setting, path, video, label, prob), so each
    row of robustness.csv can be recomputed from a file, as metrics.json can from predictions.csv. Gzipped:
    35 settings of FF++'s test crops are 800k rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("setting", "path", "video", "label", "prob"))
    for setting, samples, probs in scored:
        for s, p in zip(samples, probs, strict=True):
            writer.writerow((setting.name, s.path, s.video, s.label, float(p)))
    atomic_write(path, lambda f: f.write(gzip.compress(buffer.getvalue().encode(), mtime=0)))
    return path


def save_examples(
    folder: Path, frames: Sequence[Sample], grid: Sequence[Setting], seed: int, count: int, title: str
) -> Path:
    """The first `count` faces under every setting of `grid`, each a lossless PNG at its own size, as
    `<folder>/<face>/clean.png` and `<TYPE>-<level>.png`, plus `<folder>/grid.png`; returns the grid's path."""
    count = min(count, len(frames))
    crops = {s: PerturbedCrops(frames, s, seed, size=0) for s in [Setting(CLEAN, 0), *grid]}
    faces, names = [], []
    for i in range(count):
        name = f"{i:03d}_{safe_name(frames[i].video)}_{safe_name(Path(frames[i].path).stem)}"
        face = {s.name: c.perturbed(i) for s, c in crops.items()}
        for key, image in face.items():
            save_image(image, folder / name / f"{key}.png")
        faces.append({k: _tile(v) for k, v in face.items()})
        names.append(name)
    path = folder / "grid.png"
    if faces:
        save_png(examples_figure(faces, names, title), path)
    return path


def _tile(image: np.ndarray) -> np.ndarray:
    """A face shrunk (antialiased) to at most TILE pixels on its longer side, for the grid only."""
    h, w = image.shape[:2]
    scale = TILE / max(h, w)
    if scale >= 1:
        return image
    small = Image.fromarray(image).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
    )
    return np.asarray(small)


def write_robustness(
    out: Path,
    name: str,
    scored: Sequence[tuple[Setting, Sequence[Sample], np.ndarray]],
    eval_cfg: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows, robustness.csv, robustness_predictions.csv.gz and robustness.png of one set; returns the rows
    and their summary (`evaluation.robustness.summarize`)."""
    rows = [setting_row(s, samples, probs, eval_cfg) for s, samples, probs in scored]
    summary = summarize(rows)
    write_rows(out / "robustness.csv", rows)
    write_predictions(out / "robustness_predictions.csv.gz", scored)
    metric = "video_auc" if _has_videos(scored[0][1]) else "frame_auc"
    save_png(
        robustness_figure(rows, f"Robustness: {name} ({metric.replace('_auc', ' AUC')})", metric),
        out / "robustness.png",
    )
    return rows, summary


def _has_videos(samples: Sequence[Sample]) -> bool:
    return len({s.video for s in samples}) < len(samples)


def robustness_table(name: str, summary: Mapping[str, Any], rows: Sequence[Row]) -> str:
    """Plain text: the video AUC of each type (rows) at each level (columns) and its mean, then the means."""
    levels = summary["levels"]
    table = Table(title=f"Robustness of {name}: video AUC per level", box=box.MARKDOWN)
    for column in ("type", *(f"L{lv}" for lv in levels), "mean", "frame mean"):
        table.add_column(column, justify="left" if column == "type" else "right")
    by_key = {(r["type"], int(r["level"])): r for r in rows}  # type: ignore[call-overload]
    clean = summary["clean"]
    if clean is not None:
        table.add_row("clean", *[""] * len(levels), _fmt(clean["video_auc"]), _fmt(clean["frame_auc"]))
    for kind, means in summary["per_type"].items():
        cells = [_fmt(by_key[(kind, lv)]["video_auc"]) if (kind, lv) in by_key else "" for lv in levels]
        table.add_row(kind, *cells, _fmt(means["video_auc"]), _fmt(means["frame_auc"]))
    table.add_row(
        "all", *[""] * len(levels), _fmt(summary["mean"]["video_auc"]), _fmt(summary["mean"]["frame_auc"])
    )
    console = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False)
    console.print(table)
    return console.file.getvalue().rstrip()


def _fmt(x: object) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4f}"  # type: ignore[arg-type]


Scorer = Callable[[Setting], np.ndarray]  # a setting -> the set's probabilities under it, in sample order


def robustness_of_set(
    name: str,
    samples: Sequence[Sample],
    frames: Sequence[Sample],
    clean_probs: np.ndarray,
    score: Scorer,
    perturb: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
    out: Path,
) -> dict[str, Any]:
    """Score one set under every setting of `perturb.types` x `perturb.levels` (the crop route), write its
    files, print its table; returns what metrics.json keeps under "robustness". `frames` are the rows the
    crops come from (a clip model's `samples` hold one row per video)."""
    grid = settings(list(perturb["types"]), list(perturb["levels"]))
    if any(s.video for s in grid):
        require_videos(frames, name)
    scored: list[tuple[Setting, Sequence[Sample], np.ndarray]] = [(Setting(CLEAN, 0), samples, clean_probs)]
    for k, s in enumerate(grid):
        t0 = time.perf_counter()
        scored.append((s, samples, score(s)))
        log.info(
            "robustness %s: %s (%d/%d) in %.1f s",
            name,
            s.describe(),
            k + 1,
            len(grid),
            time.perf_counter() - t0,
        )
    if perturb["examples"]:
        save_examples(out / "robustness_examples", frames, grid, int(perturb["seed"]), int(perturb["examples"]),
                      f"{name}: the first faces under each perturbation")  # fmt: skip
    return report_robustness(name, scored, eval_cfg, out, {"route": "crops", "seed": int(perturb["seed"])})


def report_robustness(
    name: str,
    scored: Sequence[tuple[Setting, Sequence[Sample], np.ndarray]],
    eval_cfg: Mapping[str, Any],
    out: Path,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """Either route's end: the files (`write_robustness`), the printed table, and what metrics.json keeps
    under "robustness" (`info`: the route and its seed or sets, then the summary)."""
    rows, summary = write_robustness(out, name, scored, eval_cfg)
    log.info("\n%s", robustness_table(name, summary, rows))
    return {**info, "csv": "robustness.csv", **summary}
