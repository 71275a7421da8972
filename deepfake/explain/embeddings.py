"""Pooled features of a test set for TensorBoard's projector, and a t-SNE picture of them.

The feature of a face (or a clip) is what the detector's last linear layer reads: the backbone's pooled
features for a per-image model, the temporal transformer's normalised class token for a clip model. The
projector folder holds `projector_config.pbtxt`, the vectors, a sprite of thumbnails and metadata columns
(label, method, video, prob), so faces can be coloured by method in the browser; torch's `SummaryWriter.
add_embedding` writes them as TensorBoard reads them. `embeddings.png` is scikit-learn's t-SNE of the same
sample, coloured by label and by method.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from deepfake.runs.fileio import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METADATA = ("label", "method", "video", "prob")
#: Sprite thumbnails are this many pixels a side (TensorBoard's sprite must stay under 8192 px a side).
THUMB = 32
#: Methods beyond this many are drawn as "other" in the t-SNE picture (ten colours, one of them for "other").
MAX_METHODS = 9


def last_linear(model: nn.Module) -> nn.Linear:
    """The linear layer that makes the logit: the head's last (a clip model's is `head.fc`)."""
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model.head).__name__} has no linear layer to read features from")
    return linears[-1]


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """float32 (N, D) features the logit is made from, for uint8 images (N, 3, S, S) or clips (N, T, 3, S, S)."""
    seen: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    try:
        model(images)
    finally:
        handle.remove()
    return seen[-1].float().flatten(1)


def sample_indices(count: int, limit: int, seed: int) -> np.ndarray:
    """All of `range(count)` when it fits in `limit`, else a sorted seeded sample of `limit` of them."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _cell(value: object) -> str:
    """A metadata cell: tabs and line breaks would split the TSV's columns and rows."""
    return " ".join(str(value).split()) or "-"


def write_projector(
    folder: Path,
    tag: str,
    features: np.ndarray,
    metadata: Sequence[Sequence[object]],
    thumbnails: torch.Tensor,
) -> Path:
    """`folder/` as a TensorBoard run with one projector embedding (`tag`): vectors, metadata rows (METADATA
    columns), uint8 (N, 3, h, w) thumbnails as the sprite. A previous folder is replaced whole, once the new one
    is complete."""
    from torch.utils.tensorboard import SummaryWriter

    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(partial))
    try:
        writer.add_embedding(
            torch.from_numpy(np.asarray(features, dtype=np.float32)),
            metadata=[[_cell(v) for v in row] for row in metadata],
            metadata_header=list(METADATA),
            label_img=thumbnails.float().div(255),
            tag=tag,
            global_step=0,
        )
    finally:
        writer.close()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def tsne_figure(
    features: np.ndarray, labels: Sequence[int], methods: Sequence[str], seed: int, title: str
) -> Figure:
    """Two panels of one 2-D t-SNE: points coloured by label (real, fake) and by method."""
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    n = len(features)
    points = np.zeros((n, 2))
    if n > 2:  # t-SNE needs a perplexity below the number of points
        points = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed).fit_transform(
            np.asarray(features, dtype=np.float32)
        )
    fig = Figure(figsize=(11, 5))
    by_label, by_method = fig.subplots(1, 2)
    labels = np.asarray(labels)
    for value, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        chosen = labels == value
        by_label.scatter(
            points[chosen, 0], points[chosen, 1], s=6, c=colour, label=f"{name} ({chosen.sum()})"
        )
    names, counts = np.unique(np.asarray(methods, dtype=object), return_counts=True)
    shown = set(names[np.argsort(-counts, kind="stable")][:MAX_METHODS])
    grouped = np.array([m if m in shown else "other" for m in methods], dtype=object)
    for k, name in enumerate(sorted(set(grouped))):
        chosen = grouped == name
        by_method.scatter(
            points[chosen, 0], points[chosen, 1], s=6, color=f"C{k % 10}", label=f"{name} ({chosen.sum()})"
        )
    for ax, what in ((by_label, "label"), (by_method, "method")):
        ax.set(title=f"by {what}", xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(f"t-SNE of pooled features: {title} ({n} faces)")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
