"""evaluate.py's picture of a set's explanations: the faces it was most confidently wrong and right about.

Row one holds the most confidently wrong faces (a fake with the lowest probability of fake, a real with the
highest), row two the most confidently right; each shows its overlay, probability and true label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class GridFace:
    overlay: np.ndarray  # uint8 (H, W, 3)
    prob: float
    label: int  # 1 = fake
    name: str  # the video or file it came from


def confident(
    labels: np.ndarray, probs: np.ndarray, threshold: float, count: int
) -> tuple[list[int], list[int]]:
    """Indices of the `count` most confidently wrong and the `count` most confidently right predictions,
    most confident first (confidence: the probability of the predicted class)."""
    predicted = probs >= threshold
    confidence = np.where(predicted, probs, 1.0 - probs)
    order = np.argsort(-confidence, kind="stable")
    correct = predicted[order] == (labels[order] == 1)
    return order[~correct][:count].tolist(), order[correct][:count].tolist()


def grid_figure(wrong: Sequence[GridFace], right: Sequence[GridFace], title: str) -> Figure:
    """Two rows (wrong, right) of overlays captioned with probability and label; an empty row says so."""
    from matplotlib.figure import Figure

    cols = max(1, len(wrong), len(right))
    fig = Figure(figsize=(1.9 * cols + 0.8, 4.6))
    axes = fig.subplots(2, cols, squeeze=False)
    for row, (faces, what) in enumerate(
        ((wrong, "most confidently wrong"), (right, "most confidently right"))
    ):
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(faces):
                face = faces[col]
                ax.imshow(face.overlay)
                truth = "fake" if face.label else "real"
                ax.set_title(f"P(fake) {face.prob:.3f}\nlabel {truth}", fontsize=8,
                             color="tab:red" if row == 0 else "black")  # fmt: skip
                ax.set_xlabel(face.name[-28:], fontsize=6)
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(what if faces else f"{what}: none", fontsize=8)
        if not faces:
            axes[row, 0].axis("on")
            axes[row, 0].set_xticks([])
            axes[row, 0].set_yticks([])
    fig.suptitle(f"Grad-CAM: {title}", fontsize=10)
    fig.tight_layout()
    return fig
