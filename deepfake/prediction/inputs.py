"""Which inputs are videos: decided by the file's first bytes (its container's signature), not its name.

A file named like a video whose content is not one gets its error row; a video named like an image is still
treated as a video.
"""

from __future__ import annotations

from pathlib import Path

from deepfake.extraction.bounds import not_regular

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
NOT_A_VIDEO = "not a video: the file's content is no MP4/MOV, AVI, MKV or WebM container"


def is_video_content(head: bytes) -> bool:
    """True for the signatures of ISO media (MP4/MOV: a box type at byte 4), AVI (RIFF....AVI ) and
    Matroska/WebM (EBML magic)."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    return head[:4] == b"\x1a\x45\xdf\xa3"


def video_kind(path: str) -> str:
    """`video` (decode it), `not_video` (named like a video, but its content is none), `special` (a FIFO,
    socket or device, links resolved: never opened, since reading one can block forever) or `image`."""
    if not_regular(path):
        return "special"
    named = Path(path).suffix.lower() in VIDEO_EXTENSIONS
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:  # missing or unreadable: the decoder of its kind reports why, in its row
        return "video" if named else "image"
    if is_video_content(head):
        return "video"
    return "not_video" if named else "image"
