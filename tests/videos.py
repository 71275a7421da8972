"""Short test videos with real faces, written with PyAV from scikit-image's photos (no network).

`astronaut()` holds one real face, which MTCNN finds at about x 181-268, y 62-172 of the 512 x 512 photo. A
panning and zooming window over the photo gives videos whose face box per frame is known from the motion;
`coffee()` holds no face. The session fixture `test_videos` (tests/conftest.py) writes every kind once, for
extraction and prediction tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image
from skimage import data

#: MTCNN's box of the astronaut's face in the full 512 x 512 photo (x1, y1, x2, y2).
ASTRONAUT_FACE = np.array([181.0, 62.0, 268.0, 172.0])


@dataclass(frozen=True)
class Window:
    """A square window (x, y, side) of the photo shown as one frame of `size` pixels."""

    x: float
    y: float
    side: float

    def box(self, size: int, face: np.ndarray = ASTRONAUT_FACE) -> np.ndarray:
        """Where `face` (photo coordinates) lies in the frame."""
        return (face - np.array([self.x, self.y, self.x, self.y])) * (size / self.side)


def pan_windows(n: int) -> list[Window]:
    """Pan from left of the face to right of it while zooming in (a 300 px window shrinking to 220 px)."""
    out = []
    for i in range(n):
        t = i / max(1, n - 1)
        side = 300 - 80 * t
        cx, cy = 190 + 60 * t, 160 - 20 * t
        out.append(Window(cx - side / 2, cy - side / 2, side))
    return out


def render(photo: np.ndarray, window: Window, size: int) -> np.ndarray:
    box = (window.x, window.y, window.x + window.side, window.y + window.side)
    return np.asarray(Image.fromarray(photo).resize((size, size), Image.BILINEAR, box=box))


def write_video(
    path: Path,
    frames: list[np.ndarray],
    rate: int = 25,
    gop: int = 10,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
) -> Path:
    """H.264 in MP4 (keyframe every `gop` frames); `rotation` sets the display matrix (degrees CCW);
    `pix_fmt="yuv444p"` for odd sizes (1 x 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {"g": str(gop), "crf": "18"}
        if rotation:
            stream.set_display_rotation(rotation)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass(frozen=True)
class VideoSet:
    """Paths of the written videos and the known face box of each frame of the face videos."""

    pan: Path  # 40 frames, 128 x 128, one face moving and growing
    pan_boxes: list[np.ndarray]
    rotated: Path  # the first 20 pan frames stored turned 90 degrees clockwise, display matrix says +90
    mirrored: Path  # the pan video flipped left-right (a second identity-free face video)
    mirrored_boxes: list[np.ndarray]
    no_face: Path  # coffee, 12 frames
    two_faces: Path  # two faces side by side, 12 frames of 192 x 96
    five: Path  # 5 frames of the face
    truncated: Path  # the pan video cut at 60% of its bytes (no moov atom: cannot be opened)
    not_video: Path  # text with an .mp4 name
    brighter: Path  # the pan frames 24 levels brighter: the same motion, other pixels (another split's video)


SIZE = 128
PAN_FRAMES = 40


def write_test_videos(folder: Path) -> VideoSet:
    photo = data.astronaut()
    windows = pan_windows(PAN_FRAMES)
    frames = [render(photo, w, SIZE) for w in windows]
    boxes = [w.box(SIZE) for w in windows]
    pan = write_video(folder / "pan.mp4", frames)
    mirrored = write_video(folder / "mirrored.mp4", [f[:, ::-1].copy() for f in frames])
    mirrored_boxes = [np.array([SIZE - b[2], b[1], SIZE - b[0], b[3]]) for b in boxes]
    rotated = write_video(
        folder / "rotated.mp4", [np.ascontiguousarray(np.rot90(f, -1)) for f in frames[:20]], rotation=90
    )
    coffee = np.asarray(Image.fromarray(data.coffee()).resize((SIZE, 96)))
    no_face = write_video(folder / "coffee.mp4", [np.roll(coffee, 4 * i, axis=1) for i in range(12)])
    face = render(photo, Window(140, 30, 180), 96)
    pair = np.concatenate([face, face[:, ::-1]], axis=1)
    two = write_video(folder / "two_faces.mp4", [pair] * 12)
    five = write_video(folder / "five.mp4", frames[10:15])
    truncated = folder / "truncated.mp4"
    raw = pan.read_bytes()
    truncated.write_bytes(raw[: int(len(raw) * 0.6)])
    not_video = folder / "notes.mp4"
    not_video.write_text("this is not a video\n" * 20)
    brighter = write_video(
        folder / "brighter.mp4", [np.clip(f.astype(np.int16) + 24, 0, 255).astype(np.uint8) for f in frames]
    )
    return VideoSet(
        pan, boxes, rotated, mirrored, mirrored_boxes, no_face, two, five, truncated, not_video, brighter
    )


def write_vfr_video(path: Path, frames: list[np.ndarray], gaps_ms: list[int]) -> Path:
    """H.264 in MP4 with a variable frame rate: frame i is shown for gaps_ms[i] milliseconds."""
    from fractions import Fraction

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": "10", "crf": "18"}
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        pts = 0
        for image, gap in zip(frames, gaps_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += gap
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def zero_display_matrix(source: Path, path: Path) -> Path:
    """A copy of an MP4 whose track header's display matrix is all zeros (FFmpeg reads no angle from it)."""
    import struct

    raw = bytearray(source.read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = raw.find(identity, raw.find(b"tkhd"))
    assert at > 0, "no identity matrix in the track header"
    raw[at : at + len(identity)] = bytes(len(identity))
    path.write_bytes(raw)
    return path
