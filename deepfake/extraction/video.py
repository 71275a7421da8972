"""Decoding the kept frames of a video with PyAV: probe, pick evenly spaced frames, seek, rotate upright.

The cost follows the frames kept, not the video's length: before each kept frame the decoder jumps to the
keyframe at or before it when that keyframe lies past the current position (the container's index says where
keyframes are), and otherwise decodes forward; only kept frames are converted to RGB. A video that cannot be
read comes back as a `Decoded` with its error text, never as an exception, so one bad file is one row.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np

#: What a broken or unreadable file raises inside PyAV/FFmpeg (FFmpegError covers invalid data and EOF).
DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError, MemoryError)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, in display orientation (width and height after rotation)."""

    width: int
    height: int
    fps: float
    frames: int  # frames in the stream (header count, else counted from packets)
    rotation: int  # degrees counter-clockwise applied to make frames upright


@dataclass
class Decoded:
    """The kept frames of one video (frame index, RGB uint8 H x W x 3, upright), or why there are none."""

    path: str
    info: VideoInfo | None = None
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)
    error: str = ""


def sample_indices(total: int, n: int) -> list[int]:
    """`n` evenly spaced frame indices in [0, total), first and last included; all of them when total <= n."""
    if total <= n:
        return list(range(total))
    if n == 1:
        return [total // 2]
    return sorted({round(i * (total - 1) / (n - 1)) for i in range(n)})


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate by `rotation` degrees counter-clockwise (the display matrix's angle), in right angles."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """The frame's display-matrix rotation (PyAV >= 14), else the older `rotate` tag (clockwise degrees)."""
    angle = getattr(frame, "rotation", None)
    if angle is not None:
        return int(angle)
    return -int(stream.metadata.get("rotate", 0))


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError("the video stream has no frame rate")
    return Fraction(rate)


def _count_frames(path: str, stream_index: int) -> int:
    """Frames by counting packets (no decoding): for containers whose header has no frame count."""
    with av.open(path) as container:
        stream = container.streams.video[stream_index]
        return sum(1 for p in container.demux(stream) if p.size)


class _Seeker:
    """Frame index <-> timestamp for one stream, and where its keyframes are."""

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self.start = stream.start_time or 0
        self.tb = Fraction(stream.time_base)
        self.rate = _frame_rate(stream)
        try:
            stamps = [e.timestamp for e in stream.index_entries if e.is_keyframe]
        except (AttributeError, NotImplementedError):  # PyAV < 15 has no index_entries: decode forward only
            stamps = []
        self.keyframes = sorted(self.index(t) for t in stamps)

    def index(self, pts: int) -> int:
        return round((pts - self.start) * self.tb * self.rate)

    def pts(self, index: int) -> int:
        return self.start + math.floor(index / self.rate / self.tb)

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before index (-1 if none is known)."""
        i = bisect.bisect_right(self.keyframes, index)
        return self.keyframes[i - 1] if i else -1


def read_frames(path: str | Path, frames_per_video: int) -> Decoded:
    """Decode `frames_per_video` evenly spaced frames of `path` (all of them if it has fewer)."""
    out = Decoded(str(path))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            # PyAV's default slice threading, not frame threading: workers already decode videos in parallel,
            # and frame threads add a pipeline to refill after every seek.
            total = stream.frames or _count_frames(str(path), 0)
            if total <= 0:
                raise ValueError("the video stream holds no frames")
            seeker = _Seeker(stream)
            _decode_targets(container, stream, seeker, sample_indices(total, frames_per_video), total, out)
    except DECODE_ERRORS as e:
        # FFmpeg errors carry the file name and an errno in str(e); their strerror is the message alone.
        out.error = f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        out.frames = []
    return out


class FrameReader(Protocol):
    """What reads a video instead of `read_frames` (`extraction.perturbed_frames.FramePerturbation`)."""

    def read(self, path: str, frames_per_video: int) -> Decoded: ...


def timed_read(path: str, frames_per_video: int, reader: FrameReader | None = None) -> tuple[Decoded, float]:
    """`read_frames` (or `reader.read`) and the seconds it took; what decode workers run (no torch here)."""
    t0 = time.perf_counter()
    decoded = (
        reader.read(path, frames_per_video) if reader is not None else read_frames(path, frames_per_video)
    )
    return decoded, time.perf_counter() - t0


def exit_with(parent: int) -> None:
    """Decode-worker initializer: end this process once `parent` is gone, so a `kill -9` of an extraction
    leaves no orphaned decoders (the pool's own shutdown covers every other way out)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except OSError:  # no such process (or a stranger's, after the id was reused)
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _decode_targets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    seeker: _Seeker,
    targets: list[int],
    total: int,
    out: Decoded,
) -> None:
    """Walk the targets in order, seeking only when a keyframe past the current position can be jumped to."""
    pos = -1  # index of the last decoded frame
    frames = None
    rotation = 0
    for target in targets:
        if target <= pos:
            continue
        if frames is None or seeker.keyframe_before(target) > pos + 1:
            if pos >= 0 or target > 0:
                container.seek(seeker.pts(target), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            if frame.pts is None:
                continue
            pos = seeker.index(frame.pts)
            if pos >= target:
                rotation = _rotation(frame, stream)
                out.frames.append((pos, upright(frame.to_ndarray(format="rgb24"), rotation)))
                break
        else:  # the stream ended before the frame the header promised
            out.error = f"the stream ended at frame {max(pos, 0) + 1} of the {total} its header announces"
            break
    h, w = (out.frames[0][1].shape[:2]) if out.frames else (stream.height, stream.width)
    out.info = VideoInfo(w, h, float(seeker.rate), total, rotation)
