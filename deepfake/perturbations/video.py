"""VC, DeeperForensics' video compression: an H.264 re-encode at a constant rate factor, through PyAV's libx264.

The original runs `ffmpeg -i in -crf p -y out.mp4`: libx264 with ffmpeg's defaults (preset medium, yuv420p,
the input's frame rate). Here the same encoder and settings run in-process, so no ffmpeg binary is needed,
with three fixed choices the command line leaves to the machine, so that a result does not depend on it or on
the run: one encoder thread (x264's output depends on its thread count); x264's vector code capped at AVX2 on
CPUs with AVX-512 (its AVX-512 path reads uninitialised memory: in a long-running process, frames whose width
is not a multiple of 128 px encoded differently from run to run); and the pixel size rounded up to even with
copies of the last row and column (yuv420p needs it; ffmpeg would refuse an odd size).

`reencode_file` is the paper's route (the whole video, before face detection); `compress_clip` re-encodes
frames already in memory, such as one video's face crops, as one clip at `rate` frames per second. The crops
of a crop set are sparse samples of the video, so the encoder sees larger motion between them than between
the video's real frames: the crop route approximates the paper's VC, it does not reproduce it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ENCODER = "libx264"
PRESET = "medium"  # ffmpeg's default for libx264
PIX_FMT = "yuv420p"
CLIP_RATE = 25  # frames per second a crop clip is encoded at (FF++'s usual rate)


@dataclass
class Compressed:
    frames: list[np.ndarray]  # decoded back, RGB uint8, at the input size
    bytes: int  # size of the H.264 stream


@functools.cache
def _has_avx512() -> bool:
    """Whether x264 would use its AVX-512 code here: numpy's own CPU probe (F, CD, BW, DQ and VL, as x264
    requires), else Linux's CPU flags; False where neither can tell."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return bool(features.get("AVX512_SKX"))
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def x264_options(crf: int) -> dict[str, str]:
    """libx264 at CRF `crf` with ffmpeg's command-line defaults, one thread, no AVX-512 (see the module notes)."""
    options = {"crf": str(int(crf)), "preset": PRESET, "threads": "1"}
    if _has_avx512():
        options["x264-params"] = "asm=AVX2"  # x264's cumulative level: everything up to AVX2
    return options


def encoder(width: int, height: int, rate: Fraction, crf: int) -> av.video.codeccontext.VideoCodecContext:
    """A libx264 encoder with `x264_options(crf)`."""
    context = av.CodecContext.create(ENCODER, "w")
    context.width, context.height, context.pix_fmt = width, height, PIX_FMT
    context.time_base, context.framerate = 1 / rate, rate
    context.options = x264_options(crf)
    return context


def _even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def compress_clip(frames: Sequence[np.ndarray], crf: int, rate: int = CLIP_RATE) -> Compressed:
    """Encode RGB uint8 frames as one H.264 clip at CRF `crf` and decode it back.

    Frames of different sizes share one canvas (the largest height and width, rounded up to even), each placed
    top-left and padded with copies of its last row and column, and are cut back to their own size after.
    """
    if not frames:
        return Compressed([], 0)
    height = max(f.shape[0] for f in frames)
    width = max(f.shape[1] for f in frames)
    height, width = height + height % 2, width + width % 2
    context = encoder(width, height, Fraction(rate), crf)
    decoder = av.CodecContext.create("h264", "r")
    out: list[np.ndarray] = []
    size = 0

    def drain(packets: Iterable[av.Packet]) -> None:
        nonlocal size
        for packet in packets:
            size += packet.size
            out.extend(f.to_ndarray(format="rgb24") for f in decoder.decode(packet))

    for i, image in enumerate(frames):
        h, w = image.shape[:2]
        canvas = np.pad(image, ((0, height - h), (0, width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas), format="rgb24")
        frame.pts = i
        drain(context.encode(frame))
    drain(context.encode(None))
    out.extend(f.to_ndarray(format="rgb24") for f in decoder.decode(None))
    if len(out) != len(frames):
        raise RuntimeError(f"H.264 round trip returned {len(out)} frames for {len(frames)}")
    return Compressed([o[: f.shape[0], : f.shape[1]].copy() for o, f in zip(out, frames, strict=True)], size)


def reencode_file(src: str | Path, dst: str | Path, crf: int) -> int:
    """`ffmpeg -i src -crf crf dst` for the video stream: every frame re-encoded to an MP4 at the same frame
    rate, size (rounded up to even) and display rotation. Returns the frames written."""
    with av.open(str(src)) as source, av.open(str(dst), "w", format="mp4") as target:
        stream = source.streams.video[0]
        rate = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or CLIP_RATE)
        width, height = stream.codec_context.width, stream.codec_context.height
        out = target.add_stream(ENCODER, rate=rate)
        out.width, out.height, out.pix_fmt = width + width % 2, height + height % 2, PIX_FMT
        out.codec_context.time_base = 1 / rate
        out.options = x264_options(crf)
        count, rotation = 0, None
        for frame in source.decode(stream):
            if rotation is None:
                rotation = int(getattr(frame, "rotation", 0) or 0)
                if rotation:
                    out.set_display_rotation(rotation)
            if frame.width % 2 or frame.height % 2:
                padded = _even(frame.to_ndarray(format="rgb24"))
                frame = av.VideoFrame.from_ndarray(padded, format="rgb24")
            # A decoded frame keeps its I/P/B type, which libx264 would obey: the encoder must choose anew.
            frame.pict_type = av.video.frame.PictureType.NONE
            frame.pts, frame.time_base = count, out.codec_context.time_base
            target.mux(out.encode(frame))
            count += 1
        target.mux(out.encode(None))
    return count
