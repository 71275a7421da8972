"""Decoding the kept frames of a video with PyAV: probe, pick evenly spaced frames, seek, rotate upright.

The cost follows the frames kept, not the video's length: before each kept frame the decoder jumps to the
keyframe at or before it when that keyframe lies past the current position (the container's index says where
keyframes are), and otherwise decodes forward; only kept frames are converted to RGB. A video that cannot be
read comes back as a `Decoded` with its error text, never as an exception, so one bad file is one row.

Bounds: only regular files are opened (a FIFO would block the open forever), a video whose longer side
exceeds `max_side` is converted to RGB downscaled (a 195 KB 8192 x 8192 H.264 file is 200 MB per RGB frame),
and decoding stops at a deadline (`timeout_s`). Decode processes leave each frame in a shared-memory block
(`deepfake.extraction.shared_frames`) instead of pickling it: the frames cross to the detecting process
without a copy.
"""

from __future__ import annotations

import bisect
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from deepfake.extraction.bounds import MAX_SIDE, TIMEOUT_S, not_regular
from deepfake.extraction.shared_frames import SharedFrame, discard, from_shared, to_shared


class DecodeTimeout(Exception):
    """Decoding a file took longer than its time limit."""


#: What a broken or unreadable file raises inside PyAV/FFmpeg (FFmpegError covers invalid data and EOF).
DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError, MemoryError, DecodeTimeout)


def decoded_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """(width, height, scale) a frame is converted to: downscaled so its longer side is at most `max_side`
    (0: never)."""
    longer = max(width, height)
    if not max_side or longer <= max_side:
        return width, height, 1.0
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, in display orientation (width and height after rotation)."""

    width: int
    height: int
    fps: float
    frames: int  # frames in the stream (header count, else counted from packets)
    rotation: int  # degrees counter-clockwise applied to make frames upright
    scale: float = 1.0  # decoded frame size / stored size (< 1: downscaled to the decode cap)


@dataclass
class Decoded:
    """The kept frames of one video (frame index, RGB uint8 H x W x 3, upright), or why there are none."""

    path: str
    info: VideoInfo | None = None
    frames: list[tuple[int, Any]] = field(default_factory=list)  # arrays (SharedFrames while crossing)
    error: str = ""

    def unshared(self) -> Decoded:
        """Frames a decode process left in shared memory, mapped here as arrays."""
        self.frames = [(i, from_shared(f) if isinstance(f, SharedFrame) else f) for i, f in self.frames]
        return self

    def discard(self) -> None:
        """Free the shared blocks of a result that will never be read (an interrupted extraction)."""
        for _, f in self.frames:
            if isinstance(f, SharedFrame):
                discard(f)
        self.frames = []


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
    """The frame's display-matrix rotation (PyAV >= 14), else the older `rotate` tag (clockwise degrees).

    A zeroed display matrix has no angle: FFmpeg's NaN reaches PyAV as INT_MIN, which means no rotation."""
    angle = getattr(frame, "rotation", None)
    if angle is None:
        try:
            angle = -int(stream.metadata.get("rotate", 0))
        except ValueError:
            return 0
    return int(angle) if -360 <= angle <= 360 else 0


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError("the video stream has no frame rate")
    return Fraction(rate)


def _count_frames(path: str, stream_index: int, deadline: float) -> int:
    """Frames by counting packets (no decoding): for containers whose header has no frame count."""
    with av.open(path, timeout=_io_timeout(deadline)) as container:
        stream = container.streams.video[stream_index]
        count = 0
        for packet in container.demux(stream):
            count += bool(packet.size)
            _check(deadline)
        return count


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise DecodeTimeout()


def _io_timeout(deadline: float) -> float:
    """What is left of the time limit, for FFmpeg's own wait on a read that makes no progress."""
    return max(0.1, deadline - time.monotonic())


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


def read_frames(
    path: str | Path,
    frames_per_video: int,
    max_side: int = MAX_SIDE,
    timeout_s: float = TIMEOUT_S,
    store: Callable[[np.ndarray], Any] | None = None,
) -> Decoded:
    """Decode `frames_per_video` evenly spaced frames of `path` (all of them if it has fewer), each at most
    `max_side` on its longer side, within `timeout_s` seconds; `store` keeps each frame (e.g. `to_shared`)."""
    out = Decoded(str(path))
    deadline = time.monotonic() + timeout_s
    try:
        if why := not_regular(path):
            raise ValueError(why)
        with av.open(str(path), timeout=timeout_s) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            # PyAV's default slice threading, not frame threading: workers already decode videos in parallel,
            # and frame threads add a pipeline to refill after every seek.
            total = stream.frames or _count_frames(str(path), 0, deadline)
            if total <= 0:
                raise ValueError("the video stream holds no frames")
            seeker = _Seeker(stream)
            targets = sample_indices(total, frames_per_video)
            size = decoded_size(stream.width, stream.height, max_side)
            _decode_targets(container, stream, seeker, targets, total, out, size, deadline, store)
    except (
        DecodeTimeout,
        av.error.ExitError,
    ):  # ExitError: FFmpeg gave up waiting on a read (the same limit)
        out.error = f"decoding took longer than the {timeout_s:g} s limit (timeout_s); no frames kept"
        out.discard()
    except DECODE_ERRORS as e:
        # FFmpeg errors carry the file name and an errno in str(e); their strerror is the message alone.
        out.error = f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        out.discard()
    return out


class FrameReader(Protocol):
    """What reads a video instead of `read_frames` (`extraction.perturbed_frames.FramePerturbation`), with the
    same size and time bounds."""

    def read(self, path: str, frames_per_video: int, max_side: int, timeout_s: float) -> Decoded: ...


def timed_read(
    path: str,
    frames_per_video: int,
    max_side: int = MAX_SIDE,
    timeout_s: float = TIMEOUT_S,
    shared: bool = False,
    reader: FrameReader | None = None,
) -> tuple[Decoded, float]:
    """`read_frames` (or `reader.read`) and the seconds it took; what decode workers run (this module imports no
    torch). `shared`: leave the frames in shared memory (a decode process), to be mapped with `Decoded.unshared`."""
    t0 = time.perf_counter()
    if reader is None:
        decoded = read_frames(path, frames_per_video, max_side, timeout_s, to_shared if shared else None)
    else:  # each frame is changed after decoding, then handed over
        decoded = reader.read(path, frames_per_video, max_side, timeout_s)
        if shared:
            decoded.frames = [(i, to_shared(frame)) for i, frame in decoded.frames]
    return decoded, time.perf_counter() - t0


def exit_with(parent: int) -> None:
    """Decode-worker initializer: end this process once `parent` is gone, so a `kill -9` of an extraction
    leaves no orphaned decoders (the pool's own shutdown covers every other way out). A terminal's Ctrl-C
    reaches the whole process group: the worker ignores it and finishes its video, and the main process,
    which stops, shuts the pool down (a worker that died of it would print its own traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

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
    size: tuple[int, int, float],
    deadline: float,
    store: Callable[[np.ndarray], Any] | None,
) -> None:
    """Walk the targets in order, seeking only when a keyframe past the current position can be jumped to.

    A target is a time (the frame index at the stream's average rate); it gets the first frame at or after it
    that comes after the last frame taken. In a variable-frame-rate video several targets can fall between
    two frames: each still gets a frame of its own, the next one.
    """
    pos = -1  # index of the last decoded frame
    taken = None  # pts of the last frame kept
    frames = None
    rotation = 0
    width, height, scale = size
    for target in targets:
        if frames is None or seeker.keyframe_before(target) > pos + 1:
            if pos >= 0 or target > 0:
                container.seek(seeker.pts(target), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            _check(deadline)
            if frame.pts is None:
                continue
            pos = seeker.index(frame.pts)
            if pos >= target and (taken is None or frame.pts > taken):
                taken = frame.pts
                rotation = _rotation(frame, stream)
                image = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
                image = upright(image, rotation)
                out.frames.append((pos, store(image) if store else image))
                break
        else:  # the stream ended before the frame the header promised
            out.error = (
                f"the stream ended after {len(out.frames)} of the {len(targets)} frames asked for (its header "
                f"announces {total} frames: truncated, or a variable frame rate)"
            )
            break
    quarter = round(rotation / 90) % 2  # display orientation: a quarter turn swaps width and height
    w, h = (stream.height, stream.width) if quarter else (stream.width, stream.height)
    out.info = VideoInfo(w, h, float(seeker.rate), total, rotation, scale)
