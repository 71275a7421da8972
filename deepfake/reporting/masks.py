"""The blend-mask head in TensorBoard (`model.mask_head`): predicted against true masks on validation faces.

The validation split holds no masks (its fakes come from a dataset), so the first real validation faces are
self-blended here with a fixed seed each: the same fakes, hence comparable grids, every epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from deepfake.data.dataset import FaceDataset
from deepfake.data.sbi import sbi_examples
from deepfake.reporting.tensorboard import TensorBoardLogger


def mask_examples(dataset: FaceDataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, S, S) SBI fakes of the first `count` real faces and their masks (N, 1, S, S) in [0, 1]."""
    images, masks = sbi_examples(dataset, count)
    return images, masks[:, None]


@torch.no_grad()
def log_mask_grid(
    tb: TensorBoardLogger, model: nn.Module, dataset: FaceDataset, step: int, count: int
) -> None:
    """`val/blend_masks`: one row per face: the blended face, its true mask, the predicted mask."""
    if tb.writer is None:
        return
    images, truth = mask_examples(dataset, count)
    if not len(images):
        return
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predicted = model.predict_mask(images.to(device)).float().cpu()
    model.train(was_training)

    def gray(m: torch.Tensor) -> torch.Tensor:
        return (m * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)

    rows = torch.stack([images, gray(truth), gray(predicted)], 1).flatten(0, 1)
    tb.image_grid("val/blend_masks", rows, step, nrow=3)
