"""The one crop function: a frame and a detection in, a face crop and its landmarks (crop pixels) out.

Training crops (extract.py) and prediction crops must be made the same way, so this module is pure: arrays in,
arrays out, no files. A crop is the square around the face box scaled by `margin` (1.3, the field's
convention), shifted to stay inside the frame, resized to `size`; or, with `align`, the similarity transform
that puts the 5 landmarks on the ArcFace template (scaled by the same margin). Each crop carries the 2 x 3
matrix from frame to crop pixels, so anything in it maps back to the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfake.extraction.face_finder import Detection

#: ArcFace's 5-point template in its 112 x 112 crop (eyes, nose tip, mouth corners; x, y).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)
POLICIES = ("largest", "all")


@dataclass(frozen=True)
class Crop:
    image: np.ndarray  # size x size x 3, uint8 RGB
    box: np.ndarray  # the detection box in crop pixels (x1, y1, x2, y2)
    landmarks: np.ndarray | None  # (5, 2) in crop pixels
    matrix: np.ndarray  # (2, 3): frame pixels -> crop pixels


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) through a 2 x 3 affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def map_box(matrix: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The axis-aligned box around a box's corners after the affine map."""
    x1, y1, x2, y2 = box
    corners = apply(matrix, np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], np.float64))
    return np.concatenate([corners.min(0), corners.max(0)])


def square_region(box: np.ndarray, margin: float, width: int, height: int) -> tuple[float, float, float]:
    """(x0, y0, side): the box's centred square x margin, shrunk to fit and shifted inside the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = min(max(x2 - x1, y2 - y1) * margin, float(width), float(height))
    x0 = min(max((x1 + x2 - side) / 2, 0.0), width - side)
    y0 = min(max((y1 + y2 - side) / 2, 0.0), height - side)
    return x0, y0, side


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) from src to dst points (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / (sc**2).sum(1).mean())
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def template(size: int, margin: float) -> np.ndarray:
    """The ArcFace points in a size x size crop; margin 1 is ArcFace's tight crop, larger shows more."""
    return ((ARCFACE_112 / 112.0 - 0.5) / margin + 0.5) * size


def crop_face(
    frame: np.ndarray, face: Detection, margin: float = 1.3, size: int = 256, align: bool = False
) -> Crop:
    """Cut one face out of an RGB frame (see the module docstring)."""
    image = Image.fromarray(frame)
    if align and face.landmarks is not None:
        matrix = similarity(face.landmarks.astype(np.float64), template(size, margin))
        inverse = invert(matrix)
        data = tuple(inverse.reshape(-1))
        crop = image.transform((size, size), Image.AFFINE, data, resample=Image.BILINEAR)
    else:
        h, w = frame.shape[:2]
        x0, y0, side = square_region(face.box, margin, w, h)
        s = size / side
        matrix = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
        crop = image.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    landmarks = None if face.landmarks is None else apply(matrix, face.landmarks.astype(np.float64))
    return Crop(np.asarray(crop), map_box(matrix, face.box.astype(np.float64)), landmarks, matrix)


def select_faces(
    faces: Sequence[Detection], policy: str = "largest", min_size: float = 0.0, min_score: float = 0.0
) -> list[Detection]:
    """Faces whose shorter box side is >= min_size px and score >= min_score: the largest one, or all of them
    (largest first, so face index 0 is the main face)."""
    if policy not in POLICIES:
        raise ValueError(f"face policy {policy!r} is not one of {', '.join(POLICIES)}")
    kept = [
        f for f in faces if f.score >= min_score and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size
    ]
    kept.sort(key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    return kept[:1] if policy == "largest" else kept
