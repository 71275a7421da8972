"""Stand-ins for downloaded datasets, laid out as FaceForensics++ and Celeb-DF ship them, made from a real face.

The quickstart test (tests/test_quickstart.py) runs the README's commands on them, and the README's times were
measured on them (`python -m tests.standin /tmp/standin` writes both). Each video pans over scikit-image's
astronaut (tests/videos.py); a fake's face is tinted and blurred, a crude but visible manipulation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from skimage import data

from tests.videos import ASTRONAUT_FACE, Window, pan_windows, render, write_video


def _photo(index: int, fake: bool) -> np.ndarray:
    """The astronaut, one brightness per identity (no two videos share a frame); a fake's face tinted and blurred."""
    photo = np.clip(data.astronaut().astype(np.int16) + 3 * index - 30, 0, 255).astype(np.uint8)
    if fake:
        x1, y1, x2, y2 = ASTRONAUT_FACE.astype(int)
        face = Image.fromarray(photo[y1:y2, x1:x2]).filter(ImageFilter.GaussianBlur(2))
        tinted = np.asarray(face).astype(np.int16) + np.array([30, -10, -10])
        photo[y1:y2, x1:x2] = np.clip(tinted, 0, 255).astype(np.uint8)
    return photo


def _video(path: Path, index: int, fake: bool, frames: int, size: int) -> Path:
    windows: list[Window] = pan_windows(frames)
    if index % 2:
        windows = windows[::-1]  # every other identity pans the other way
    photo = _photo(index, fake)
    return write_video(path, [render(photo, w, size) for w in windows])


def write_ffpp(root: Path, pairs: int = 6, frames: int = 40, size: int = 256) -> Path:
    """`pairs` x 2 originals (c23) and their Deepfakes, with official-style split files (train/val/test)."""
    ids = [f"{i:03d}" for i in range(2 * pairs)]
    for i, vid in enumerate(ids):
        _video(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4", i, False, frames, size)
    split_pairs = [[ids[2 * p], ids[2 * p + 1]] for p in range(pairs)]
    for a, b in split_pairs:
        for target, source in ((a, b), (b, a)):
            path = root / "manipulated_sequences/Deepfakes/c23/videos" / f"{target}_{source}.mp4"
            _video(path, int(target), True, frames, size)
    n_val = max(1, pairs // 6)
    splits = {
        "train": split_pairs[: pairs - 2 * n_val],
        "val": split_pairs[pairs - 2 * n_val : pairs - n_val],
        "test": split_pairs[pairs - n_val :],
    }
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, listed in splits.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(listed))
    return root


def write_celebdf(root: Path, videos: int = 4, frames: int = 40, size: int = 256) -> Path:
    """`videos` real (Celeb-real) and as many fake (Celeb-synthesis) videos, all listed for testing."""
    lines = []
    for i in range(videos):
        _video(root / "Celeb-real" / f"id{i}_{i:04d}.mp4", 10 + i, False, frames, size)
        _video(root / "Celeb-synthesis" / f"id{i}_id{i + 1}_{i:04d}.mp4", 10 + i, True, frames, size)
        lines += [f"1 Celeb-real/id{i}_{i:04d}.mp4", f"0 Celeb-synthesis/id{i}_id{i + 1}_{i:04d}.mp4"]
    (root / "YouTube-real").mkdir(parents=True, exist_ok=True)
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1])
    write_ffpp(out / "FaceForensics++")
    write_celebdf(out / "Celeb-DF-v2")
    _video(out / "clip.mp4", 3, True, 40, 256)
    print(out)
