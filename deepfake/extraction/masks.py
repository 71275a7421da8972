"""FF++'s manipulation masks beside the face crops (`extract.py dataset=ffpp dataset.masks=true`).

FaceForensics++ ships, per manipulated video, a mask video of the region each method changed:
`manipulated_sequences/<Method>/masks/videos/<target>_<source>.mp4`, frame-aligned with the fake. Its frames
at the fake's kept indices are cropped with the fake's own boxes (the same `crop_face` call, so mask and face
line up pixel for pixel) into `faces/<video>/masks/<crop name>.png` (grayscale; `masks/` is a folder the frame
converters skip), and the manifest's `mask` column names them. Evaluation's explanations score their heatmaps
against these (`deepfake.explain.faithfulness`). A fake whose mask video is missing (a method released without
masks) keeps an empty cell; reals have none.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from deepfake.extraction.bounds import MAX_SIDE, TIMEOUT_S
from deepfake.extraction.crops import crop_face
from deepfake.extraction.video import read_frames

MASKS_DIR = "masks"


def ffpp_mask_video(rel: str) -> str | None:
    """The mask video's path (relative to the root) of a fake at `manipulated_sequences/<Method>/<compression>/
    videos/<name>`, else None (an original)."""
    parts = PurePosixPath(rel).parts
    if len(parts) < 5 or parts[0] != "manipulated_sequences":
        return None
    return PurePosixPath(parts[0], parts[1], MASKS_DIR, *parts[3:]).as_posix()


def mask_frames(
    path: Path,
    frames_per_video: int,
    wanted: set[int],
    max_side: int = MAX_SIDE,
    timeout_s: float = TIMEOUT_S,
) -> dict[int, np.ndarray]:
    """The mask video's frames (H, W, 3) at the indices `wanted`: decoded as the fake was (`read_frames`, the
    same evenly spaced indices for a frame-aligned video of the same length); indices it lacks are absent."""
    decoded = read_frames(path, frames_per_video, max_side, timeout_s)
    return {index: frame for index, frame in decoded.frames if index in wanted}


def save_mask(folder: Path, name: str, mask_frame: np.ndarray, frame_shape: tuple[int, ...], face: object,
              margin: float, size: int, align: bool) -> str:  # fmt: skip
    """Crop a mask frame exactly as its face (`face`: the Detection) and save it grayscale; returns its path
    relative to the video's folder (`masks/<name>.png`)."""
    h, w = frame_shape[:2]
    if mask_frame.shape[:2] != (h, w):  # a mask video at another resolution: stretched onto the frame first
        mask_frame = np.asarray(Image.fromarray(mask_frame).resize((w, h), Image.BILINEAR))
    crop = crop_face(mask_frame, face, margin, size, align).image
    (folder / MASKS_DIR).mkdir(exist_ok=True)
    Image.fromarray(crop).convert("L").save(folder / MASKS_DIR / f"{name}.png", compress_level=1)
    return f"{MASKS_DIR}/{name}.png"
