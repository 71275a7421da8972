"""What a person looks at: a face with its heatmap over it and the probability in the corner, saved beside the
map itself, under names that mirror the inputs.

Per face, `<folder>/<name>.png` (the overlay; a mask-head detector's predicted blend mask in a second panel)
and `<folder>/<name>.npy` (float32, the crop's H x W, in [0, 1]). Names follow the input's path below the
input folder, each part reduced to safe characters, made unique, and every path checked to stay inside the
folder, so an input named `../../x` cannot write elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deepfake.model.mask_head import mask_overlay
from deepfake.runs.fileio import atomic_write

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Overlays smaller than this (pixels a side) are enlarged, so the probability stays legible.
MIN_SIDE = 192


def heat_overlay(crop: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the crop under its heatmap (grad-cam's `show_cam_on_image`, jet, half and half)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(crop.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=0.5)


def _caption(image: np.ndarray, text: str, scale: int) -> np.ndarray:
    """`image` enlarged `scale` times (nearest) with `text` on a dark box in its top-left corner."""
    im = Image.fromarray(image)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(10, im.height // 12))
    *_, right, bottom = draw.textbbox((4, 2), text, font=font)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def face_overlay(
    crop: np.ndarray, heat: np.ndarray, prob: float | None, mask: np.ndarray | None = None, label: str = ""
) -> np.ndarray:
    """The overlay PNG's pixels: heatmap over the crop, `P(fake)` (and `label`) in the corner; with a predicted
    blend `mask`, that mask over the crop in a second panel."""
    scale = max(1, -(-MIN_SIDE // min(crop.shape[:2])))
    text = "P(fake) n/a" if prob is None else f"P(fake) {prob:.3f}"
    panels = [_caption(heat_overlay(crop, heat), f"{text} {label}".strip(), scale)]
    if mask is not None:
        panels.append(_caption(mask_overlay(crop, mask), "blend mask", scale))
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def mirrored(path: str, base: Path | None) -> PurePosixPath:
    """An input's path below `base` (or all of it, when outside), each part made safe, without the extension."""
    p = Path(path)
    try:
        parts = p.resolve().relative_to(base.resolve()).parts if base is not None else p.parts
    except ValueError:
        parts = p.parts
    parts = tuple(part for part in parts if part not in (p.anchor, "/", "\\"))
    parts = (*parts[:-1], Path(parts[-1]).stem) if parts else ("input",)
    return PurePosixPath(*(_UNSAFE.sub("_", part).strip("._")[:100] or "_" for part in parts))


class Names:
    """Unique relative names for one output folder (`x`, then `x_2`, ...); case-blind, for macOS and Windows."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def claim(self, name: PurePosixPath) -> PurePosixPath:
        candidate, n = name, 2
        while str(candidate).lower() in self.taken:
            candidate, n = name.with_name(f"{name.name}_{n}"), n + 1
        self.taken.add(str(candidate).lower())
        return candidate


def write_face(folder: Path, name: PurePosixPath, image: np.ndarray, heat: np.ndarray) -> Path:
    """`<folder>/<name>.png` and `.npy` (float32, clipped to [0, 1]), each written atomically; returns the PNG."""
    root = folder.resolve()
    png = (root / f"{name}.png").resolve()
    if not png.is_relative_to(root):
        raise ValueError(f"explanation name {name!s} leaves {folder}")
    png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(png, lambda f: Image.fromarray(image).save(f, format="PNG"))
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    atomic_write(png.with_suffix(".npy"), lambda f: np.save(f, heat))
    return png
