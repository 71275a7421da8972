"""ROC, precision-recall, reliability and confusion-matrix figures (label 1 = fake = positive), for PNGs and TensorBoard.

Figures are built with matplotlib's object API (`Figure`, no pyplot state), so they render headless, on a
cluster node or in a DataLoader-heavy process, and never open a window; the curves are scikit-learn's displays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay, roc_curve

from deepfake.runs.fileio import atomic_write

Curve = tuple[np.ndarray, np.ndarray]  # (labels, probabilities)
FAKE = "fake"  # the positive class, as every figure names it (scikit-learn says "Positive class: 1")


def counts_text(images: int, real: int, fake: int, videos: int | None = None) -> str:
    """ "36 images (18 real, 18 fake), 12 videos": what a curve stands on, for titles."""
    text = f"{images} images ({real} real, {fake} fake)"
    return text if videos is None else f"{text}, {videos} videos"


def curve_title(kind: str, name: str, labels: np.ndarray, videos: int | None = None) -> str:
    """A curve's title: its kind, the set's name and the counts behind it."""
    labels = np.asarray(labels)
    fake = int((labels == 1).sum())
    return f"{kind}: {name}\n{counts_text(len(labels), len(labels) - fake, fake, videos)}"


def roc_figure(
    frames: Curve,
    videos: Curve | None = None,
    title: str = "ROC",
    targets: Sequence[float] = (),
    at_threshold: Mapping[str, Any] | None = None,
) -> Figure:
    """Frame-level ROC, plus the video-level curve when given, with AUC in the legend and the chance line.

    `targets`: FPRs whose operating points (largest TPR at FPR <= target) are marked on the frame curve, where
    the set has the 1/FPR reals to measure them; `at_threshold` ({threshold, fpr, tpr}): the point a threshold
    chosen elsewhere (on validation) lands on this set.
    """
    fig = Figure(figsize=(5.5, 5.5), dpi=100)
    ax = fig.add_subplot()
    RocCurveDisplay.from_predictions(*frames, ax=ax, name="frames", plot_chance_level=True)
    if videos is not None:
        RocCurveDisplay.from_predictions(*videos, ax=ax, name="videos")
    _mark_operating_points(ax, *frames, targets)
    if (
        at_threshold is not None
        and at_threshold.get("fpr") is not None
        and at_threshold.get("tpr") is not None
    ):
        ax.plot(
            [at_threshold["fpr"]], [at_threshold["tpr"]], "*", color="black", markersize=11,
            label=f"validation threshold {at_threshold['threshold']:.3f}: FPR {at_threshold['fpr']:.3f}, "
            f"TPR {at_threshold['tpr']:.3f}",
        )  # fmt: skip
    ax.set(xlabel=f"false positive rate (real called {FAKE})", ylabel=f"true positive rate ({FAKE} caught)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def _mark_operating_points(ax: Axes, labels: np.ndarray, probs: np.ndarray, targets: Sequence[float]) -> None:
    from deepfake.evaluation.metrics import enough_reals

    labels = np.asarray(labels)
    reals = int((labels == 0).sum())
    fpr, tpr, _ = roc_curve(labels, probs, drop_intermediate=False)
    for k, target in enumerate(t for t in targets if enough_reals(reals, t)):
        i = int(np.flatnonzero(fpr <= target + 1e-12).max())
        ax.plot(
            [fpr[i]], [tpr[i]], "osD"[k % 3], color="C3", markersize=6, markerfacecolor="none",
            label=f"TPR {tpr[i]:.3f} at FPR <= {target:g}",
        )  # fmt: skip


def pr_figure(
    frames: Curve, videos: Curve | None = None, title: str = f"Precision-recall ({FAKE} = positive)"
) -> Figure:
    """Precision-recall curve(s) with AP in the legend and the prevalence (chance) level."""
    fig = Figure(figsize=(5.5, 5.5), dpi=100)
    ax = fig.add_subplot()
    PrecisionRecallDisplay.from_predictions(*frames, ax=ax, name="frames", plot_chance_level=True)
    if videos is not None:
        PrecisionRecallDisplay.from_predictions(*videos, ax=ax, name="videos")
    ax.set(xlabel=f"recall ({FAKE} caught)", ylabel=f"precision (called {FAKE} and {FAKE})")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def reliability_figure(
    labels: np.ndarray, curves: dict[str, np.ndarray], title: str = "Reliability"
) -> Figure:
    """Fraction of fakes against mean predicted probability of fake in 15 equal-width bins, one curve per named
    set of probabilities (e.g. raw and calibrated), with each curve's ECE in the legend and the diagonal;
    below, the number of images in each bin, per curve, written on its bar."""
    from deepfake.evaluation.calibration import ECE_BINS, expected_calibration_error

    fig = Figure(figsize=(5.5, 6.5), dpi=100)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1.2])
    ax = fig.add_subplot(grid[0])
    counts_ax = fig.add_subplot(grid[1], sharex=ax)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    width = (edges[1] - edges[0]) / max(1, len(curves))
    for k, (name, probs) in enumerate(curves.items()):
        ece = expected_calibration_error(labels, probs)
        CalibrationDisplay.from_predictions(
            labels, probs, n_bins=ECE_BINS, ax=ax, name=f"{name} (ECE {ece:.3f})", ref_line=k == 0
        )
        counts = bin_counts(probs, ECE_BINS)
        bars = counts_ax.bar(
            edges[:-1] + (k + 0.5) * width, counts, width=width, color=ax.lines[-1].get_color(), label=name
        )
        counts_ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=6, rotation=90)
    ax.set(xlabel="", ylabel=f"fraction of {FAKE}s")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    counts_ax.set(xlabel=f"mean predicted probability of {FAKE}", ylabel="images per bin", xlim=(0, 1))
    counts_ax.margins(y=0.35)
    fig.tight_layout()
    return fig


def bin_counts(probs: np.ndarray, bins: int) -> np.ndarray:
    """Images per equal-width probability bin, binned as the ECE and scikit-learn's calibration curve bin."""
    ids = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], np.asarray(probs, dtype=np.float64))
    return np.bincount(ids, minlength=bins)


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


def method_auc_figure(per_method: Mapping[str, Any], title: str) -> Figure | None:
    """Each fake method's (generator's) AUC against all reals, as horizontal bars from chance (0.5) with their
    values and image counts; None when no method has an AUC."""
    rows = [
        (name, entry["auc"], entry.get("n"))
        for name, entry in per_method.items()
        if isinstance(entry, Mapping)
        and isinstance(entry.get("auc"), int | float)
        and np.isfinite(entry["auc"])
    ]
    if not rows:
        return None
    names = [f"{name} (n={n})" if isinstance(n, int) else name for name, _, n in rows]
    height = 1.2 + 0.35 * len(rows)
    fig = Figure(figsize=(7.0, height), dpi=100)
    # Margins from the label lengths, not a layout engine: one draw instead of three (a report draws these).
    left = min(0.5, 0.04 + 0.0105 * max(map(len, names)))
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.45 / height, bottom=0.55 / height)
    ax = fig.add_subplot()
    bars = ax.barh(names, [auc - 0.5 for _, auc, _ in rows], left=0.5, color="tab:blue")
    ax.bar_label(bars, labels=[f"{auc:.4f}" for _, auc, _ in rows], padding=3, fontsize=8)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlim(min(0.5, *(auc for _, auc, _ in rows)) - 0.1, 1.1)  # room for the value labels
    ax.invert_yaxis()
    ax.set(xlabel=f"AUC of each method's {FAKE}s against all reals (chance 0.5)")
    ax.set_title(title, fontsize=10)
    return fig
