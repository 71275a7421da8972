"""The blend-mask head: a light decoder on a backbone feature map (stride <= 16) that predicts where a face was
blended (SBI, Shiohara & Yamasaki 2022; Face X-ray, Li et al. 2020), its loss and its overlay.

Masks travel with training batches as a fourth uint8 channel (`deepfake.data.sbi.MASK_SCALE` x the soft
mask); a sample whose mask is unknown (a fake from a real forgery dataset) carries `UNKNOWN_MASK` everywhere
and gets no mask loss. Real faces carry an empty mask.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepfake.choices import MASK_LOSSES
from deepfake.data.sbi import MASK_SCALE, UNKNOWN_MASK
from deepfake.errors import ConfigError

#: The mask head reads the deepest feature map at most this many pixels per cell: the last stage of a CNN
#: (stride 32) is too coarse to draw a blend boundary (2 x 2 cells at 64 px); a ViT's patch grid is 16.
MAX_STRIDE = 16


def mask_level(backbone: nn.Module, architecture: str, img_size: int) -> tuple[int, int]:
    """The index (for timm's `forward_intermediates`) and channels of the feature map the mask head reads,
    probed once on a blank image; a backbone without such maps is refused naming the option and the backbone."""
    info = getattr(backbone, "feature_info", None)
    levels = [i for i, f in enumerate(info or []) if f.get("reduction", MAX_STRIDE + 1) <= MAX_STRIDE]
    if not hasattr(backbone, "forward_intermediates") or not levels:
        raise ConfigError(
            f"model.mask_head=true needs a backbone with spatial feature maps (timm forward_intermediates), "
            f"and model.architecture={architecture} has none; use a CNN or ViT backbone or model.mask_head=false"
        )
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            _, (features,) = backbone.forward_intermediates(
                torch.zeros(1, 3, img_size, img_size), indices=[levels[-1]]
            )
    finally:
        backbone.train(was_training)
    return levels[-1], features.shape[1]


class MaskDecoder(nn.Module):
    """conv3x3-BN-ReLU-conv1x1 on one feature map: one blend logit per feature cell."""

    def __init__(self, in_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def mask_loss(mask_logits: torch.Tensor, target_u8: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean BCE or soft-Dice loss over the samples whose mask is known; 0 when none is. No host sync.

    `mask_logits` (N, 1, h, w) is upsampled to the target's (N, 1, H, W) size.
    """
    known = (target_u8[:, 0, 0, 0] != UNKNOWN_MASK).float()
    target = target_u8.float().div_(MASK_SCALE).clamp_(0, 1)
    logits = F.interpolate(mask_logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    if kind == "bce":
        per_sample = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2, 3))
    elif kind == "dice":
        p = torch.sigmoid(logits)
        inter = (p * target).sum((1, 2, 3))
        per_sample = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    else:
        raise ConfigError(f"training.mask_loss={kind!r} is not one of {', '.join(MASK_LOSSES)}")
    return (per_sample * known).sum() / known.sum().clamp(min=1)


def mask_overlay(crop_uint8: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A (H, W, 3) uint8 crop with a (h, w) mask in [0, 1] drawn over it in red, resized to the crop."""
    h, w = crop_uint8.shape[:2]
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    red = np.zeros_like(crop_uint8, dtype=np.float32)
    red[..., 0] = 255.0
    weight = (alpha * m)[..., None]
    out = crop_uint8.astype(np.float32) * (1 - weight) + red * weight
    return out.round().clip(0, 255).astype(np.uint8)
