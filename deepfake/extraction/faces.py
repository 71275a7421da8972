"""One decoded video to face crops on disk: detect (or reuse the source video's boxes), crop, save, describe.

Files of a video's folder: `<frame>.png` (or `<frame>_<face>.png` with faces.policy=all; `.jpg` with
faces.format=jpg), `<same name>.npy` with the 5 landmarks in crop pixels (the file SBI looks for beside a
frame), and `faces.csv` with each crop's box in crop and frame pixels and the frame -> crop matrix.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from deepfake.extraction.crops import apply, crop_face, invert, select_faces
from deepfake.extraction.face_finder import Detection
from deepfake.extraction.masks import save_mask
from deepfake.extraction.writer import FACE_COLUMNS, FACES_CSV


@dataclass
class VideoFaces:
    """What was written for one video: crop file names per frame index, and the faces.csv rows."""

    files: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)  # with mask frames: each crop's mask file ("" without one)
    frames_with_face: int = 0
    rows: list[list[object]] = field(default_factory=list)


def save_crops(
    frames: list[tuple[int, np.ndarray]],
    detections: list[list[Detection]],
    faces: DictConfig,
    folder: Path,
    masks: Mapping[int, np.ndarray] | None = None,
) -> VideoFaces:
    """Crop the selected faces of each frame into `folder` and write its faces.csv; with `masks` (FF++'s mask
    frames by index), each crop's mask cropped alike into `folder/masks/` (`deepfake.extraction.masks`)."""
    out = VideoFaces()
    ext = "jpg" if faces.format == "jpg" else "png"
    for (index, frame), found in zip(frames, detections, strict=True):
        chosen = select_faces(found, faces.policy, faces.min_size, faces.min_score)
        out.frames_with_face += bool(chosen)
        for k, det in enumerate(chosen):
            crop = crop_face(frame, det, faces.margin, faces.size, faces.align)
            name = f"{index:06d}" + (f"_{k}" if faces.policy == "all" else "")
            image = Image.fromarray(crop.image)
            if ext == "jpg":
                image.save(folder / f"{name}.jpg", quality=faces.jpeg_quality)
            else:
                image.save(folder / f"{name}.png", compress_level=1)  # OpenCV's default: fast, ~10% larger
            if crop.landmarks is not None:
                np.save(folder / f"{name}.npy", crop.landmarks.astype(np.float32))
            out.files.append(f"{name}.{ext}")
            if masks is not None:
                mask = masks.get(index)
                out.masks.append(
                    ""
                    if mask is None
                    else save_mask(
                        folder, name, mask, frame.shape, det, faces.margin, faces.size, faces.align
                    )
                )
            out.rows.append([f"{name}.{ext}", index, k, round(det.score, 5),
                             *np.round(crop.box, 2), *np.round(det.box.astype(np.float64), 3),
                             *np.round(crop.matrix.reshape(-1), 6)])  # fmt: skip
    with (folder / FACES_CSV).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FACE_COLUMNS)
        writer.writerows(out.rows)
    return out


def read_boxes(folder: Path) -> dict[int, list[Detection]]:
    """The detections behind a finished video's crops, in frame pixels (for fakes that reuse them)."""
    found: dict[int, list[Detection]] = {}
    path = folder / FACES_CSV
    if not path.is_file():
        return found
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            matrix = np.array([float(row[k]) for k in FACE_COLUMNS[-6:]]).reshape(2, 3)
            box = np.array([float(row[f"frame_{k}"]) for k in ("x1", "y1", "x2", "y2")], np.float32)
            lm_file = folder / (Path(row["file"]).stem + ".npy")
            landmarks = (
                apply(invert(matrix), np.load(lm_file)).astype(np.float32) if lm_file.is_file() else None
            )
            found.setdefault(int(row["frame"]), []).append(Detection(box, float(row["score"]), landmarks))
    return found
