"""The model in eval mode outside the training step: a whole split's predictions (validation, the end-of-run
temperature fit) and the TensorBoard preview's probabilities."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from deepfake.evaluation.tta import tta_logits
from deepfake.system.precision import Precision
from deepfake.training.engine import move_batch


@torch.no_grad()
def validate(
    model: nn.Module, loader: Iterable, precision: Precision, device: torch.device, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict a whole split (`tta`: see `deepfake.evaluation.tta`); returns (labels, fake probabilities,
    dataset indices) in loader order."""
    return predict_split(model, loader, precision, device, tta)[:3]


@torch.no_grad()
def predict_split(
    model: nn.Module, loader: Iterable, precision: Precision, device: torch.device, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`validate`'s (labels, probabilities, indices) and the logits behind the probabilities (float32 values
    as float64): the best epoch's logits are what the end-of-run temperature fit needs."""
    model.eval()
    probs, labels, indices, raw = [], [], [], []
    for batch in loader:
        images, y, index = move_batch(batch, device)
        with precision.autocast():
            logits = tta_logits(model, images, tta)
        probs.append(torch.sigmoid(logits))
        raw.append(logits)
        labels.append(y)
        indices.append(index)
    if not probs:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)
    # Sync point: one transfer of the split's predictions at the end of the pass.
    return (
        torch.cat(labels).cpu().numpy(),
        torch.cat(probs).double().cpu().numpy(),
        torch.cat(indices).cpu().numpy(),
        torch.cat(raw).double().cpu().numpy(),
    )


@torch.no_grad()
def preview_probs(
    model: nn.Module, images: torch.Tensor, precision: Precision, device: torch.device
) -> np.ndarray:
    """P(fake) of uint8 preview images (N, 3, S, S; a clip's T frames side by side, N, 3, S, T*S) in eval mode,
    for TensorBoard's augmented grid before the first step (an untrained head sits near 0.5)."""
    frames = int(getattr(model, "frames", 1))
    x = images.to(device)
    if frames > 1:  # (N, 3, S, T*S) -> (N, T, 3, S, S)
        x = x.unflatten(-1, (frames, x.shape[-2])).permute(0, 3, 1, 2, 4)
    training = model.training
    model.eval()
    try:
        with precision.autocast():
            logits = model.forward(x)  # not __call__: an in-place compiled model would compile for this batch
    finally:
        model.train(training)
    return torch.sigmoid(logits.float()).cpu().numpy()
