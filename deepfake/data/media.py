"""What a dataset's video is on disk: a folder of extracted frames, or a video file; `Media` names which.

The layouts (`deepfake.data.layouts`) list their videos through one of the two, so converting frame folders
and extracting faces from the video files read the same labels, splits and identities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepfake.errors import DataError

#: Sub-folders that extraction tools (DeepfakeBench, FF++ scripts) put frames in under a video's parent.
FRAME_DIRS = ("frames", "images", "faces", "crops")
#: Sibling folders that hold no face frames.
NON_FRAME_DIRS = ("videos", "landmarks", "masks", "bboxes")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def video_folders(parent: Path) -> dict[str, Path]:
    """`{video id: folder}` under parent, looking inside a frames/images/faces/crops sub-folder if present, or
    inside a videos/ sub-folder of folders (`extract.py`'s crops keep the dataset's `videos/` in their path)."""
    for name in FRAME_DIRS:
        if (parent / name).is_dir():
            parent = parent / name
            break
    else:
        if (parent / "videos").is_dir() and any(e.is_dir() for e in os.scandir(parent / "videos")):
            parent = parent / "videos"
    if not parent.is_dir():
        return {}
    return {
        e.name: Path(e.path)
        for e in sorted(os.scandir(parent), key=lambda e: e.name)
        if e.is_dir() and e.name not in NON_FRAME_DIRS
    }


def is_video(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS


def video_files(parent: Path) -> dict[str, Path]:
    """`{video id: file}` for the video files in parent, or in its videos/ sub-folder (FF++) if present."""
    if (parent / "videos").is_dir():
        parent = parent / "videos"
    if not parent.is_dir():
        return {}
    found: dict[str, Path] = {}
    for e in sorted(os.scandir(parent), key=lambda e: e.name):
        if not e.is_dir() and is_video(
            e.name
        ):  # a FIFO too: extraction gives it an error row, never opens it
            video = os.path.splitext(e.name)[0]
            if (
                video in found
            ):  # dup.mp4 and dup.mkv: one id, one crops folder; the second would replace the first
                raise DataError(
                    f"{found[video]} and {e.path} have the same video id {video!r}; rename or move one of them"
                )
            found[video] = Path(e.path)
    return found


@dataclass(frozen=True)
class Media:
    """What a layout's videos are on disk: how to find them under a folder, and how messages name them."""

    find: Callable[[Path], dict[str, Path]]
    noun: str  # "frames" or "video files"
    entry: str  # one video's place under its folder, with {video} for the video's name


FRAMES = Media(video_folders, "frames", "[frames/]{video}/<frame>.png")
VIDEOS = Media(video_files, "video files", "[videos/]{video}.mp4")
