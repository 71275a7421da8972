"""The robustness figures: AUC per perturbation type against level beside a type x level heatmap
(`<set>/robustness.png`), and the grid of example faces under every setting (`robustness_examples/grid.png`).

matplotlib's object API only (`Figure`), like `reporting.figures`: headless, no pyplot state.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from deepfake.runs.fileio import atomic_write

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
    lines.set_ylabel(metric.replace("_", " ").replace("auc", "AUC"))
    lines.set_ylim(min(0.45, np.nanmin(grid, initial=1.0) - 0.02), 1.005)
    lines.grid(alpha=0.3)
    lines.legend(fontsize=8, loc="lower left", ncol=2)
    image = heat.imshow(grid, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    heat.set_xticks(range(len(levels)), [str(lv) for lv in levels])
    heat.set_yticks(range(len(types)), types)
    heat.set_xlabel("level")
    for (i, j), value in np.ndenumerate(grid):
        heat.text(j, i, "n/a" if math.isnan(value) else f"{value:.3f}", ha="center", va="center", fontsize=8)
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
    """One block per face: a row per type, its clean crop then the levels, each tile TILE pixels wide."""
    settings = list(faces[0])
    types = list(dict.fromkeys(s.split("-")[0] for s in settings if s != "clean"))
    levels = sorted({int(s.split("-")[1]) for s in settings if s != "clean"})
    rows = len(faces) * len(types)
    inch = 0.9
    fig = Figure(figsize=(inch * (len(levels) + 1) + 0.8, inch * rows + 0.6), dpi=TILE / inch)
    axes = np.atleast_2d(fig.subplots(rows, len(levels) + 1, squeeze=False))
    for f, (face, name) in enumerate(zip(faces, names, strict=True)):
        for t, kind in enumerate(types):
            row = axes[f * len(types) + t]
            for c, key in enumerate(["clean", *(f"{kind}-{lv}" for lv in levels)]):
                ax = row[c]
                ax.set_xticks([])
                ax.set_yticks([])
                if key in face:
                    ax.imshow(face[key])
                if f == 0 and t == 0:
                    ax.set_title("clean" if c == 0 else f"level {levels[c - 1]}", fontsize=8)
            row[0].set_ylabel(kind if t else f"{name}\n{kind}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig
