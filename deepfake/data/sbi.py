"""Self-blended images (SBI, Shiohara & Yamasaki, CVPR 2022): fake training faces made from real ones.

A copy of a real face is perturbed in colour, frequency and position, then blended back through a soft,
randomly deformed face mask, so the only evidence of forgery is a blending boundary and an inside/outside
inconsistency: what face-swap methods share. The mask follows the convex hull of facial landmarks when a
landmark file is present, and is otherwise an ellipse around the face centre (face crops are centred).

Random parameters are drawn from a CPU `torch.Generator` the caller seeds per sample; the pixel work is
torch on whatever device holds the image, so loader workers and `data.decode=gpu` produce the same fakes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BLEND_RATIOS = (0.5, 0.75, 1.0, 1.0, 1.0)  # partial blends too, as in the SBI paper
#: A batch's mask channel (model.mask_head): uint8 round(MASK_SCALE x mask); UNKNOWN_MASK everywhere marks a fake
#: whose mask nobody knows (a real forgery dataset's), which gets no mask loss.
MASK_SCALE = 254
UNKNOWN_MASK = 255


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def landmark_path(image_path: str) -> str | None:
    """A landmark file for a frame: `<frame>.npy` beside it, or DeepfakeBench's `landmarks/` twin of `frames/`."""
    stem = os.path.splitext(image_path)[0]
    candidates = [stem + ".npy"]
    parts = Path(stem).parts
    if "frames" in parts:
        i = len(parts) - 1 - parts[::-1].index("frames")
        candidates.append(str(Path(*parts[:i], "landmarks", *parts[i + 1 :])) + ".npy")
    return next((c for c in candidates if os.path.isfile(c)), None)


def load_landmarks(path: str, original_size: tuple[int, int], size: int) -> torch.Tensor:
    """Landmarks (K, 2) as x, y in the original frame, mapped into the centre-cropped, resized S x S image."""
    points = np.load(path).astype(np.float32).reshape(-1, 2)
    w, h = original_size
    side = min(w, h)
    offset = np.array([(w - side) / 2.0, (h - side) / 2.0], np.float32)
    return torch.from_numpy((points - offset) * (size / side))


def _hull_mask(points: torch.Tensor, h: int, w: int, device: torch.device) -> torch.Tensor:
    """1 inside the convex hull of points, 0 outside: a half-plane test per hull edge, no Python per pixel."""
    from scipy.spatial import ConvexHull

    pts = points.numpy()
    hull = torch.from_numpy(pts[ConvexHull(pts).vertices]).to(device)  # counter-clockwise
    nxt = hull.roll(-1, 0)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5, indexing="ij"
    )
    ex, ey = (nxt - hull).T
    cross = ex[:, None, None] * (ys - hull[:, 1, None, None]) - ey[:, None, None] * (
        xs - hull[:, 0, None, None]
    )
    # ConvexHull orders vertices counter-clockwise in (x, y); with y pointing down the inside has cross >= 0.
    return (cross >= 0).all(0).float()


def _ellipse_mask(g: torch.Generator, h: int, w: int, device: torch.device) -> torch.Tensor:
    cx, cy = w * _u(g, 0.46, 0.54), h * _u(g, 0.46, 0.54)
    rx, ry = w * _u(g, 0.18, 0.3), h * _u(g, 0.22, 0.36)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5, indexing="ij"
    )
    return ((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2) <= 1.0).float()


def _deform(g: torch.Generator, mask: torch.Tensor, amount: float) -> torch.Tensor:
    """Warp a (H, W) mask by a smooth random displacement field (a few control points, bicubic)."""
    h, w = mask.shape
    coarse = (torch.rand((1, 2, 4, 4), generator=g) * 2 - 1) * amount
    field = F.interpolate(coarse.to(mask.device), size=(h, w), mode="bicubic", align_corners=True)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=mask.device),
        torch.linspace(-1, 1, w, device=mask.device),
        indexing="ij",
    )
    grid = torch.stack((xs, ys), -1)[None] + field.permute(0, 2, 3, 1)
    return F.grid_sample(mask[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[
        0, 0
    ]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) with a 3-sigma kernel: pixels beyond it from any mass stay 0."""
    c, h, w = x.shape
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(c, 1, 1, 1)
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(c, 1, -1, 1), groups=c)[0]


def blend_mask(
    g: torch.Generator, h: int, w: int, device: torch.device, landmarks: torch.Tensor | None = None
) -> torch.Tensor:
    """The soft blend mask (H, W) in [0, 1]: hull or ellipse, deformed, blurred, scaled by a blend ratio."""
    unit = min(h, w) / 64.0
    hard = _hull_mask(landmarks, h, w, device) if landmarks is not None else _ellipse_mask(g, h, w, device)
    hard = _deform(g, hard, _u(g, 0.02, 0.06))
    soft = _blur(hard[None], _u(g, 0.8, 2.5) * unit)[0]
    ratio = BLEND_RATIOS[int(torch.randint(len(BLEND_RATIOS), (), generator=g))]
    return soft.clamp_(0.0, 1.0) * ratio


def perturb(g: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    """The source face: float (3, H, W) in 0-255, shifted in colour, frequency and position."""
    h, w = x.shape[-2:]
    unit = min(h, w) / 64.0
    s = _u(g, 0.6, 1.0)  # one strength for all colour changes, so some fakes are subtle and some are not
    gains = torch.tensor([1 + s * _u(g, -0.16, 0.16) for _ in range(3)], device=x.device).view(3, 1, 1)
    shift = torch.tensor([s * _u(g, -32, 32) for _ in range(3)], device=x.device).view(3, 1, 1)
    src = x * gains + shift
    mean = src.mean()
    src = mean + (src - mean) * (1 + s * _u(g, -0.3, 0.3))
    gray = src.mean(0, keepdim=True)
    src = gray + (src - gray) * (1 + s * _u(g, -0.5, 0.5))
    theta = s * _u(g, -0.6, 0.6)  # hue: rotate colours about the grey axis (Rodrigues)
    k = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    rot = torch.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * (k @ k)
    src = torch.einsum("ij,jhw->ihw", rot.to(x.device), src)

    kind = int(torch.randint(3, (), generator=g))
    if kind == 0:
        src = _blur(src, _u(g, 0.5, 1.5) * unit)
    elif kind == 1:
        src = src + _u(g, 0.5, 1.5) * (src - _blur(src, _u(g, 0.7, 1.5) * unit))
    else:
        f = _u(g, 0.4, 0.8)
        small = F.interpolate(src[None], scale_factor=f, mode="bilinear", antialias=True)
        src = F.interpolate(small, size=(h, w), mode="bilinear")[0]

    scale = 1.0 + _u(g, -0.05, 0.05)
    theta_aff = torch.tensor([[1 / scale, 0.0, _u(g, -0.04, 0.04)], [0.0, 1 / scale, _u(g, -0.04, 0.04)]])
    grid = F.affine_grid(theta_aff[None].to(x.device), [1, 3, h, w], align_corners=False)
    return F.grid_sample(src[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def self_blend(
    image: torch.Tensor, g: torch.Generator, landmarks: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend uint8 (3, H, W) with a perturbed copy of itself; returns the uint8 fake and its mask (H, W).

    Where the mask is 0 the output equals the input exactly, so every changed pixel lies inside the mask.
    """
    x = image.float()
    mask = blend_mask(g, x.shape[-2], x.shape[-1], x.device, landmarks)
    out = x + mask * (perturb(g, x) - x)
    return out.round_().clamp_(0, 255).to(torch.uint8), mask


def sbi_examples(dataset: Any, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, S, S) SBI fakes of a dataset's first `count` real faces and their masks (N, S, S) in [0, 1].

    Each is blended with a generator seeded by its index: the same fakes every call, so epochs compare. The
    validation split holds no known masks; the mask head's previews and the explanations' faithfulness score
    in training blend these. `dataset` is a `deepfake.data.dataset.FaceDataset` (its `samples` and `load`).
    """
    reals = [i for i, s in enumerate(dataset.samples) if s.label == 0][:count]
    pairs = [self_blend(dataset.load(i), torch.Generator().manual_seed(i)) for i in reals]
    if not pairs:
        return torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0, 1, 1)
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
