"""The robustness figures: AUC per perturbation type against level beside a type x level heatmap
(`<set>/robustness.png`), and the grid of example faces under every setting (`robustness_examples/grid.png`).

matplotlib's object API only (`Figure`), like `reporting.figures`: headless, no pyplot state. Imported only
where a figure is drawn, so `deepfake.reporting.robustness` (and evaluate.py's start) does not load matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from deepfake.perturbations.protocol import CLEAN

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
