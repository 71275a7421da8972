"""Decoding is bounded whatever the file (issue 23): only regular files are opened, frames above the decode
cap come out downscaled, a time limit stops a slow file, variable frame rates and zeroed display matrices
are read right, and frames too small for a face are `no_face`, not an error."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from omegaconf import OmegaConf

from deepfake.errors import ConfigError
from deepfake.extraction.bounds import not_regular
from deepfake.extraction.config import validate
from deepfake.extraction.face_finder import MtcnnFinder, detect_downscaled
from deepfake.extraction.pipeline import _status, decoded_videos
from deepfake.extraction.shared_frames import from_shared, to_shared
from deepfake.extraction.video import Decoded, read_frames
from deepfake.prediction.inputs import video_kind
from tests.videos import VideoSet, write_vfr_video, write_video, zero_display_matrix

T = TypeVar("T")


def within(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a thread; fails (instead of hanging the suite) when it has not returned in time."""
    out: list[T] = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__} still running after {seconds} s: it hangs"
    return out[0]


def test_fifos_sockets_and_links_to_them_are_refused_without_being_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "b.mp4"
    os.mkfifo(fifo)
    (tmp_path / "link.mp4").symlink_to(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.mp4"))
    regular = write_video(tmp_path / "ok.mp4", [np.zeros((16, 16, 3), np.uint8)] * 2)
    assert not_regular(regular) == ""
    for name, kind in (
        ("b.mp4", "a FIFO (named pipe)"),
        ("link.mp4", "a FIFO (named pipe)"),
        ("s.mp4", "a socket"),
    ):
        path = tmp_path / name
        assert not_regular(path) == f"not a regular file: {kind}; only regular files are read"
        decoded = within(10, read_frames, path, 4)  # opening a FIFO without a writer would block forever
        assert decoded.frames == [] and decoded.error == f"ValueError: {not_regular(path)}"
        assert within(10, video_kind, str(path)) == "special"
    sock.close()


def test_a_video_above_the_decode_cap_is_decoded_downscaled(tmp_path: Path) -> None:
    """8192 x 16 (cheap to write, above the default 4096 cap): frames come out 4096 x 8, scale 0.5."""
    wide = write_video(tmp_path / "wide.mp4", [np.full((16, 8192, 3), 90 + i, np.uint8) for i in range(3)])
    decoded = read_frames(wide, 8)
    assert [f.shape for _, f in decoded.frames] == [(8, 4096, 3)] * 3
    info = decoded.info
    assert (info.width, info.height, info.scale) == (8192, 16, 0.5)
    full = read_frames(wide, 8, max_side=0)
    assert full.frames[0][1].shape == (16, 8192, 3) and full.info.scale == 1.0


@pytest.mark.cli  # shared memory starts multiprocessing's resource tracker, a Python process
def test_frames_cross_processes_in_shared_memory_and_leave_nothing_behind() -> None:
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    shared = to_shared(image)
    assert Path(f"/dev/shm/{shared.name}").exists()
    back = from_shared(shared)
    assert np.array_equal(back, image) and not Path(f"/dev/shm/{shared.name}").exists()  # unlinked on mapping
    back[0, 0] = 255  # still mapped, still writable after the name is gone
    assert back[0, 0, 0] == 255


def test_a_decode_past_its_time_limit_is_an_error_row_and_the_batch_goes_on(test_videos: VideoSet) -> None:
    results = list(
        decoded_videos([str(test_videos.pan), str(test_videos.five)], 8, workers=0, timeout_s=1e-6)
    )
    for decoded, _ in results:
        assert decoded.frames == [] and decoded.error == (
            "decoding took longer than the 1e-06 s limit (timeout_s); no frames kept"
        )
    assert len(read_frames(test_videos.five, 8, timeout_s=30).frames) == 5


def test_a_variable_frame_rate_video_gets_a_frame_per_target_or_says_it_is_short(tmp_path: Path) -> None:
    """40 frames 10 ms apart, then 20 frames 500 ms apart: the average rate is 60 / 9.4 s = 6.4 fps, so the
    first 0.4 s (40 frames) spans ~3 frame indices. The old decoder gave 19 of 32 frames and `ok`."""
    frames = [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(60)]
    vfr = write_vfr_video(tmp_path / "vfr.mp4", frames, [10] * 40 + [500] * 20)
    few = read_frames(vfr, 8)
    assert len(few.frames) == 8 and few.error == ""  # every target has a frame of its own
    indices = [i for i, _ in few.frames]
    assert indices == sorted(set(indices))
    many = read_frames(vfr, 32)
    n = len(many.frames)
    assert n < 32 and many.error == (
        f"the stream ended after {n} of the 32 frames asked for (its header announces 60 frames: truncated, or "
        "a variable frame rate)"
    )
    assert _status(many, crops=n, frames_per_video=32) == "short"
    brightness = [int(f[0, 0, 0]) for _, f in many.frames]
    assert brightness == sorted(set(brightness))  # distinct frames, in order: no frame is used twice


def test_a_zeroed_display_matrix_is_no_rotation(tmp_path: Path) -> None:
    """FFmpeg's angle of an all-zero matrix is NaN, which PyAV hands over as INT_MIN (-2147483648)."""
    plain = write_video(tmp_path / "plain.mp4", [np.full((32, 48, 3), 100, np.uint8)] * 4)
    zeroed = read_frames(zero_display_matrix(plain, tmp_path / "zeroed.mp4"), 4)
    assert decoded_ok(zeroed) and zeroed.info.rotation == 0
    assert zeroed.frames[0][1].shape == (32, 48, 3)


def decoded_ok(decoded: Decoded) -> bool:
    return decoded.error == "" and len(decoded.frames) > 0


@pytest.mark.parametrize("side", [1, 2, 17, 32])
def test_frames_too_small_for_the_smallest_face_have_no_face(side: int) -> None:
    """MTCNN's image pyramid is empty below its 20 px window (`torch.cat(): expected a non-empty list`)."""
    frames = [np.full((side, side, 3), 120, np.uint8)] * 3
    assert detect_downscaled(MtcnnFinder("cpu"), frames, 640, 40, 32) == [[], [], []]


def test_extract_refuses_non_finite_and_unbounded_settings() -> None:
    def check(*overrides: str) -> str:
        cfg = OmegaConf.merge({"root": "videos", "out": "faces"}, OmegaConf.from_dotlist(list(overrides)))
        with pytest.raises(ConfigError) as caught:
            validate(cfg)
        return str(caught.value)

    assert check("faces.margin=nan") == "faces.margin=nan is not a finite number"
    assert check("detector.thresholds=[0.6,inf,0.9]") == "detector.thresholds[1]=inf is not a finite number"
    assert check("timeout_s=0") == "timeout_s must be > 0 (got 0.0)"
    assert check("frames_per_video=100000").startswith("frames_per_video=100000 must be in [1, 1024]")
    assert check("decode_max_side=-1").startswith("decode_max_side=-1 must be in [0, 16384]")
