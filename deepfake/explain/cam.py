"""Grad-CAM heatmaps through the `grad-cam` library (jacobgil/pytorch-grad-cam): which pixels of a face push the
detector's one logit towards fake.

`cam_maps` runs one detector: GradCAM, HiResCAM or GradCAM++ on the layer `deepfake.explain.target` picks,
with `BinaryClassifierOutputTarget(1)` on the fake logit, in fp32 (autocast off: half-precision gradients
underflow on small maps), each map scaled to [0, 1] by the library. A clip model's frames go through the shared
backbone as one batch, so each frame gets its own map of how it moved the clip's logit. `explain_crops` is
what predict and evaluate call: every member of an ensemble at its own input size, with flip TTA the map of the
mirrored face mirrored back, and the mean of all those maps at the crops' size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from deepfake.errors import ConfigError, UserError
from deepfake.explain.target import CamTarget, cam_target
from deepfake.model.grad_flags import requires_grad

#: The `explain=` methods (`deepfake.choices.EXPLAIN_METHODS` bar none) and the grad-cam classes behind them.
CAM_CLASSES = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam++": "GradCAMPlusPlus"}


class Explained(Protocol):
    """What `explain_crops` needs of an ensemble member (`deepfake.evaluation.ensemble.Member` has it)."""

    model: nn.Module
    img_size: int


class FramesAsBatch(nn.Module):
    """A clip model seen as a per-image one: grad-cam sizes its maps from a 4-D input, so the (B*T, 3, H, W)
    frames come in flat and are folded into (B, T, 3, H, W) clips here; one logit per clip comes out."""

    def __init__(self, model: nn.Module, frames: int) -> None:
        super().__init__()
        self.model, self.frames = model, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.unflatten(0, (-1, self.frames)))


def inputs_only(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Gradients reach the activations through the input alone: no parameter gets a .grad (a training run's
    DDP hooks never fire, frozen parts stay frozen); each parameter's flag comes back as it was."""
    return requires_grad(model, False)


def cam_maps(model: nn.Module, images: torch.Tensor, method: str, target: CamTarget) -> np.ndarray:
    """float32 (N, H, W) maps in [0, 1] of uint8 images (N, 3, H, W) on the model's device; a clip model takes its
    clips' frames in order, N = clips x frames. The model is left in the mode it was in; grad-cam's own
    `zero_grad` clears any .grad its parameters held."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    frames = int(getattr(model, "frames", 1))
    was_training = model.training
    net = FramesAsBatch(model, frames) if frames > 1 else model
    cam = getattr(pytorch_grad_cam, CAM_CLASSES[method])(
        model=net, target_layers=[target.module], reshape_transform=target.reshape
    )
    # fp32 input that needs its gradient: every activation then carries one, the parameters none
    x = images.float().div(255).requires_grad_(True)
    try:
        with torch.enable_grad(), torch.autocast(images.device.type, enabled=False), inputs_only(model):
            targets = [BinaryClassifierOutputTarget(1)] * (len(images) // frames)
            maps = cam(input_tensor=x, targets=targets)
    except (ValueError, RuntimeError, IndexError) as e:  # the layer's output is no map the reshape can make
        raise ConfigError(
            f"Grad-CAM cannot read layer {target.path} ({type(e).__name__}: {str(e)[:200]}); pick a layer "
            "whose output is a spatial feature map"
        ) from None
    finally:
        cam.activations_and_grads.release()
        cam.outputs = None
        model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def explain_crops(
    members: Sequence[Explained],
    crops: torch.Tensor,
    method: str,
    layer: str | None = None,
    tta: str = "none",
    key: str = "explain.layer",
    batch_size: int = 32,
) -> np.ndarray:
    """The mean map (N, S, S) over members and TTA views of uint8 crops (N, 3, S, S) on the members' device.

    Each member sees the crops resized to its own input size, as its prediction did (antialiased), and its
    maps are resized back to S x S (bilinear); `layer` overrides each member's target layer. Crops go through
    in batches of `batch_size` (a clip model's: all its frames at once, one clip).
    """
    size = crops.shape[-2:]
    total = torch.zeros(len(crops), *size)
    views = 0
    for member in members:
        target = cam_target(member.model, layer, key)
        step = len(crops) if getattr(member.model, "frames", 1) > 1 else batch_size
        for flip in (False, True) if tta == "flip" else (False,):
            for start in range(0, len(crops), max(1, step)):
                x = crops[start : start + step]
                if tuple(x.shape[-2:]) != (member.img_size, member.img_size):
                    x = TF.resize(x, [member.img_size, member.img_size], antialias=True)
                maps = torch.from_numpy(cam_maps(member.model, x.flip(-1) if flip else x, method, target))
                maps = maps.flip(-1) if flip else maps
                resized = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
                total[start : start + step] += resized
            views += 1
    return (total / views).clamp_(0, 1).numpy()


def require_gradcam(key: str) -> None:
    """Fail before any work when `grad-cam` is missing, naming the extra that installs it."""
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"{key} needs the grad-cam package ({e}); install it with: pip install 'deepfake[explain]'"
        ) from None


def resize_map(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (h, w) map resized to `size` (bilinear), float32 in [0, 1]."""
    if heat.shape == tuple(size):
        return heat.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    return out.clamp_(0, 1).numpy()
