"""The blend-mask head: a light decoder on the backbone's last feature map that predicts where a face was
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


def spatial_map(backbone: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """A backbone's `forward_features` output as (N, C, h, w): CNN maps as they are, NHWC maps (Swin)
    permuted, ViT tokens without their prefix tokens reshaped to their square grid."""
    if features.ndim == 4:
        return features.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else features
    prefix = getattr(backbone, "num_prefix_tokens", None)
    if features.ndim == 3 and prefix is not None:
        tokens = features[:, prefix:]
        side = round(tokens.shape[1] ** 0.5)
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(features.shape[0], -1, side, side)
    raise ValueError(f"no spatial feature map in a {tuple(features.shape)} output")


def check_spatial(backbone: nn.Module, architecture: str, img_size: int) -> int:
    """The channels of the backbone's feature map, probed once on a blank image; a backbone without one
    is refused naming the option and the backbone."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            features = backbone.forward_features(torch.zeros(1, 3, img_size, img_size))
            return spatial_map(backbone, features).shape[1]
    except (AttributeError, ValueError) as e:
        raise ConfigError(
            f"model.mask_head=true needs a backbone with a spatial feature map, and model.architecture="
            f"{architecture} has none ({e}); use a CNN or ViT backbone or model.mask_head=false"
        ) from None
    finally:
        backbone.train(was_training)


class MaskDecoder(nn.Module):
    """conv3x3-BN-ReLU-conv1x1 on the last feature map: one blend logit per feature cell."""

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
