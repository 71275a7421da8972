"""ROC, precision-recall, reliability and confusion-matrix figures (label 1 = fake = positive), for PNGs and TensorBoard.

Figures are built with matplotlib's object API (`Figure`, no pyplot state), so they render headless, on a
cluster node or in a DataLoader-heavy process, and never open a window; the curves are scikit-learn's displays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from deepfake.runs.fileio import atomic_write

Curve = tuple[np.ndarray, np.ndarray]  # (labels, probabilities)


def roc_figure(frames: Curve, videos: Curve | None = None, title: str = "ROC") -> Figure:
    """Frame-level ROC, plus the video-level curve when given, with AUC in the legend and the chance line."""
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    RocCurveDisplay.from_predictions(*frames, ax=ax, name="frames", plot_chance_level=videos is None)
    if videos is not None:
        RocCurveDisplay.from_predictions(*videos, ax=ax, name="videos", plot_chance_level=True)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pr_figure(
    frames: Curve, videos: Curve | None = None, title: str = "Precision-recall (fake = positive)"
) -> Figure:
    """Precision-recall curve(s) with AP in the legend and the prevalence (chance) level."""
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    PrecisionRecallDisplay.from_predictions(*frames, ax=ax, name="frames", plot_chance_level=True)
    if videos is not None:
        PrecisionRecallDisplay.from_predictions(*videos, ax=ax, name="videos")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reliability_figure(
    labels: np.ndarray, curves: dict[str, np.ndarray], title: str = "Reliability"
) -> Figure:
    """Fraction of fakes against mean predicted probability in 15 equal-width bins, one curve per named set of
    probabilities (e.g. raw and calibrated), with each curve's ECE in the legend and the diagonal."""
    from deepfake.evaluation.calibration import ECE_BINS, expected_calibration_error

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    for k, (name, probs) in enumerate(curves.items()):
        ece = expected_calibration_error(labels, probs)
        CalibrationDisplay.from_predictions(
            labels, probs, n_bins=ECE_BINS, ax=ax, name=f"{name} (ECE {ece:.3f})", ref_line=k == 0
        )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def confusion_figure(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, title: str = ""
) -> Figure:
    """Counts of real/fake images against predictions at `threshold`."""
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(labels, dtype=np.int64),
        (np.asarray(probs) >= threshold).astype(np.int64),
        labels=[0, 1],
        display_labels=["real", "fake"],
        ax=ax,
        colorbar=False,
    )
    ax.set_title(title or f"Confusion at threshold {threshold:g}")
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write the figure atomically, so an interrupted evaluation never leaves a truncated PNG."""
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
