"""What a run shows in TensorBoard beyond its curves: config, hparams, a loss overlay, image grids, val figures.

The runner calls `log_run_start` once and `log_val_epoch` after each validation; everything here works on
predictions validation already brought to the host, so it adds no device sync to the training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from deepfake.data.dataset import FaceDataset
from deepfake.data.loader import WrappedLoader
from deepfake.reporting.tensorboard import TensorBoardLogger

if TYPE_CHECKING:
    pass

#: Validation metrics shown in the HParams tab, each as its final value (val/x) and at the best epoch (best/x).
HPARAM_METRICS = ("auc", "ap", "eer", "acc", "loss", "video_auc")

LAYOUT = {
    "losses": {"train vs val loss": ["Multiline", ["train/loss", "train/epoch_loss", "val/loss"]]},
    "detection": {
        "val AUC: frames, videos, best": ["Multiline", ["val/auc", "val/video_auc", "val/auc_best"]]
    },
}


def hparam_metric_tags() -> list[str]:
    return [f"{group}/{m}" for group in ("val", "best") for m in HPARAM_METRICS]


def best_scalars(best_metrics: Mapping[str, float]) -> dict[str, float]:
    """The validation metrics of the best epoch so far as `best/<metric>`, read by the HParams tab."""
    return {
        f"best/{k[4:]}": v for k, v in best_metrics.items() if k.startswith("val/") and k != "val/auc_best"
    }


def flatten_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config leaves as `section.key` hparams; lists and nulls become text (HParams takes scalars)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.")
            return
        name = prefix[:-1]
        flat[name] = (
            node if isinstance(node, bool | int | float | str) else str(node if node is not None else "null")
        )

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def log_run_start(
    tb: TensorBoardLogger,
    cfg: DictConfig,
    config_yaml: str,
    train_loader: DataLoader | WrappedLoader,
    score: Callable[[torch.Tensor], np.ndarray] | None = None,
) -> None:
    """Config text, hparams, the train/val loss overlay, and a grid of the first augmented training images,
    each tile captioned with its label and (`score`: images -> probabilities) the model's P(fake) at step 0."""
    if tb.writer is None:
        return
    tb.text("config", f"```\n{config_yaml}\n```")
    tb.hparams(flatten_config(cfg), hparam_metric_tags())
    tb.custom_scalars(LAYOUT)
    sampler = train_loader.sampler
    # The very images (same crop and flip) the first steps train on: items derive from (seed, epoch, index).
    first = [int(i) for i in sampler.order()[: cfg.logging.num_images]]
    if not first:
        return
    dataset = train_loader.dataset
    images = torch.stack([dataset.preview(i, sampler.epoch) for i in first])
    probs = score(images) if score is not None else None
    labels = dataset.labels[first]
    captions = [
        f"{'fake' if label else 'real'}" + (f" · p {probs[k]:.2f}" if probs is not None else "")
        for k, label in enumerate(labels)
    ]
    title = "augmented training images: label · P(fake) at step 0 (before training)"
    tb.image("train/augmented", tile_image(images, captions, title), 0)


#: Tile geometry of `tile_image`, in pixels: a tile's height, the caption band under it, the title band, the gap.
TILE, CAPTION, TITLE, GAP = 160, 16, 22, 4


def tile_image(images: torch.Tensor, captions: Sequence[str], title: str, ncols: int = 8) -> np.ndarray:
    """uint8 images (N, 3, H, W), as they entered the model, in a grid with a caption under each tile (HWC).

    Drawn with PIL rather than matplotlib: the grid is logged before a run's first step, where matplotlib's
    import and layout cost ~1.4 s on a 2-core machine.
    """
    from PIL import Image, ImageDraw

    n = len(images)
    cols = min(ncols, n)
    rows = -(-n // cols)
    height, width = images.shape[-2:]
    tw = round(TILE * width / height)  # a clip's frames side by side are wider than tall
    canvas = Image.new("RGB", (cols * (tw + GAP) + GAP, TITLE + rows * (TILE + CAPTION + GAP) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.text((GAP, 4), title, fill="black", font=font)
    for k, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = GAP + (k % cols) * (tw + GAP)
        y = TITLE + (k // cols) * (TILE + CAPTION + GAP)
        tile = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((tw, TILE), Image.Resampling.NEAREST)
        canvas.paste(tile, (x, y))
        draw.text((x, y + TILE + 2), caption, fill="black", font=font)
    return np.asarray(canvas)


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def confidently_wrong(labels: np.ndarray, probs: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """Positions of up to k misclassified items, the most confident mistake first."""
    wrong = np.flatnonzero((probs >= threshold) != labels.astype(bool))
    margin = np.abs(probs[wrong] - labels[wrong])  # 1 = certain of the wrong class
    return wrong[np.argsort(-margin, kind="stable")][:k]


def log_val_epoch(
    tb: TensorBoardLogger,
    step: int,
    epoch: int,
    labels: np.ndarray,
    probs: np.ndarray,
    index: np.ndarray,
    dataset: FaceDataset,
    cfg: DictConfig,
) -> None:
    """A PR curve every epoch; every `logging.images_every_n_epochs`, ROC and confusion figures and the
    validation images the model gets most confidently wrong (with their paths as text)."""
    if tb.writer is None or not len(labels):
        return
    tb.pr_curve("val/pr_curve", labels, probs, step)
    every = cfg.logging.images_every_n_epochs
    if not every or (epoch + 1) % every:
        return
    from deepfake.reporting.figures import (  # matplotlib loads only when figures are due
        confusion_figure,
        roc_figure,
    )

    threshold = cfg.eval.threshold
    if len(np.unique(labels)) == 2:
        tb.figure("val/roc", roc_figure((labels, probs), title=f"val ROC, epoch {epoch + 1}"), step)
    title = f"val confusion at threshold {threshold:g}, epoch {epoch + 1}"
    tb.figure("val/confusion_matrix", confusion_figure(labels, probs, threshold, title), step)
    worst = confidently_wrong(labels, probs, threshold, cfg.logging.num_images)
    if len(worst):
        items = [dataset[int(index[i])][0] for i in worst]
        # a clip (T, 3, S, S) is shown as its frames side by side
        images = [x if x.ndim == 3 else torch.cat(list(x), dim=-1) for x in items]
        captions = [f"{'fake' if labels[i] else 'real'} · p {probs[i]:.2f}" for i in worst]
        title = f"val, epoch {epoch + 1}: most confidently wrong (label · P(fake), threshold {threshold:g})"
        tb.image("val/confidently_wrong", tile_image(torch.stack(images), captions, title), step)
        rows = [
            f"| {rank + 1} | {'fake' if labels[i] else 'real'} | {probs[i]:.4f} | {dataset.samples[int(index[i])].path} |"
            for rank, i in enumerate(worst)
        ]
        header = "| # | label | prob of fake | path |\n|---|---|---|---|\n"
        tb.text("val/confidently_wrong", header + "\n".join(rows), step)
