"""What a run shows in TensorBoard beyond its curves: config, hparams, a loss overlay, image grids, val figures.

The runner calls `log_run_start` once and `log_val_epoch` after each validation; everything here works on
predictions validation already brought to the host, so it adds no device sync to the training loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from deepfake.data.dataset import FaceDataset
from deepfake.data.loader import WrappedLoader
from deepfake.reporting.tensorboard import TensorBoardLogger

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
    tb: TensorBoardLogger, cfg: DictConfig, config_yaml: str, train_loader: DataLoader | WrappedLoader
) -> None:
    """Config text, hparams, the train/val loss overlay, and a grid of the first augmented training images."""
    if tb.writer is None:
        return
    tb.text("config", f"```\n{config_yaml}\n```")
    tb.hparams(flatten_config(cfg), hparam_metric_tags())
    tb.custom_scalars(LAYOUT)
    sampler = train_loader.sampler
    # The very images (same crop and flip) the first steps train on: items derive from (seed, epoch, index).
    first = sampler.order()[: cfg.logging.num_images]
    images = [train_loader.dataset.preview(i, sampler.epoch) for i in first]
    if images:
        tb.image_grid("train/augmented", torch.stack(images), 0)


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
        tb.image_grid("val/confidently_wrong", torch.stack(images), step)
        rows = [
            f"| {rank + 1} | {'fake' if labels[i] else 'real'} | {probs[i]:.4f} | {dataset.samples[int(index[i])].path} |"
            for rank, i in enumerate(worst)
        ]
        header = "| # | label | prob of fake | path |\n|---|---|---|---|\n"
        tb.text("val/confidently_wrong", header + "\n".join(rows), step)
