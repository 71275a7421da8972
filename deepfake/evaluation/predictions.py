"""Per-image predictions as CSV (path, video, label, prob): what ROC plots and later analysis are drawn from."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepfake.errors import UserError
from deepfake.runs.fileio import atomic_write

COLUMNS = ("path", "video", "label", "prob")
VAL_PREDICTIONS = "val_predictions.csv"  # in the run directory: the best epoch's validation predictions


def write_predictions(
    path: str | Path, paths: Sequence[str], videos: Sequence[str], labels: np.ndarray, probs: np.ndarray
) -> Path:
    """Atomically write one row per image; `prob` is the fake probability sigmoid(logit)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in zip(paths, videos, np.asarray(labels).tolist(), np.asarray(probs).tolist(), strict=True):
        writer.writerow((row[0], row[1], int(row[2]), f"{float(row[3]):.8g}"))
    path = Path(path)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
    return path


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a predictions CSV as arrays (`label` int64, `prob` float64)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {
            "path": np.array([r["path"] for r in rows], dtype=object),
            "video": np.array([r["video"] for r in rows], dtype=object),
            "label": np.array([int(r["label"]) for r in rows], dtype=np.int64),
            "prob": np.array([float(r["prob"]) for r in rows], dtype=np.float64),
        }
    except (OSError, KeyError, ValueError) as e:
        raise UserError(
            f"cannot read predictions {path} ({type(e).__name__}: {e}); expected columns {', '.join(COLUMNS)}"
        ) from None
