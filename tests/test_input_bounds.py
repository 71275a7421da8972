"""Unbounded inputs end in one error before any work, or work in bounded memory (issue 23, item 3): a clip
model's frames, image sizes read from a checkpoint, the loader's memory, temperatures, and decoding a video
far larger than any face needs."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image
from skimage import data

from deepfake.config import to_config
from deepfake.data.loader import SlotPool
from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.inference import load_detector
from deepfake.model.detector import get_model
from deepfake.runs.checkpoint import build_state, save_checkpoint
from tests.conftest import ROOT

GiB = 2**30


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=temporal", "model.frames=100000"],
            "model.frames=100000 is more than 1024, the most this project takes",
        ),
        (["data.img_size=100000"], "data.img_size=100000 is more than 4096, the most this project takes"),
        (["model.img_size=5000"], "model.img_size=5000 is more than 4096, the most this project takes"),
    ],
)
def test_clip_frames_and_image_sizes_are_bounded_before_anything_is_built(
    compose_cfg: Callable[..., DictConfig], overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{message}; lower it$"):
        to_config(compose_cfg(overrides))
    with pytest.raises(ConfigError, match=r"^model.frames must be in \[1, 1024\] \(got 100000\)"):
        get_model("tiny", img_size=32, frames=100000)


@pytest.mark.parametrize(("key", "value"), [("img_size", 100000), ("frames", 100000), ("img_size", 0)])
def test_a_checkpoints_sizes_are_bounded_and_the_file_named(tmp_path: Path, key: str, value: int) -> None:
    """preprocess.img_size=100000 was accepted and ended in an allocator traceback when images were decoded."""
    state = build_state(model=get_model("tiny", img_size=32, frames=2))
    state["preprocess"][key] = value
    path = save_checkpoint(tmp_path / "big.pt", state)
    with pytest.raises(UserError, match=rf"^{path} is not a deepfake detector checkpoint: its 'preprocess' .* is "
                       r"not \{img_size \(1 to 4096\), mean\[3\], std\[3\], frames \(clip models, 1 to 1024\)\}$"):  # fmt: skip
        load_detector(path)


def test_loader_batches_that_cannot_fit_in_memory_are_refused_before_allocation() -> None:
    """A clip of 1024 frames at 4096 px is 48 GiB; 6 slots of it are refused, not allocated."""
    pool = SlotPool(6, (1, 1024, 3, 4096, 4096))
    with pytest.raises(
        ConfigError, match=r"^the data loader needs 288\.0 GiB of memory for 6 batches of 1 items"
    ):
        pool.allocate()
    assert pool.slots == []


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (8 * GiB, 8 * GiB))  # torch alone maps ~3.6 GiB of address space


@pytest.mark.cli
def test_a_clip_model_of_100000_frames_is_one_error_line_within_8_gib(tmp_path: Path) -> None:
    """It was killed by the kernel for memory, with no message."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "model=temporal", "model.frames=100000", f"base_path={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=_limit_address_space,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: model.frames=100000 is more than 1024, the most this project takes; lower it"
    ]


#: Decodes in a fresh interpreter (PyAV and numpy only) and prints its peak resident memory in MiB: VmHWM,
#: the high-water mark of this process image (ru_maxrss would also count the parent's before the exec).
PEAK = """
import re, sys
from deepfake.extraction.video import read_frames
decoded = read_frames(sys.argv[1], 16, max_side=int(sys.argv[2]))
assert decoded.error == "" and len(decoded.frames) == 16, decoded.error
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(decoded.frames[0][1].shape, hwm // 1024)
"""


@pytest.mark.cli
def test_a_large_video_is_decoded_within_a_bounded_memory(tmp_path: Path) -> None:
    """16 frames of 2048 x 2048 are 192 MiB as RGB; capped at 512 px they are 12 MiB. The same bound (4096 by
    default) took an 8192 x 8192 video's extraction from 18.7 GiB to 2.6 GiB (README, Errors)."""
    face = np.asarray(Image.fromarray(data.astronaut()).resize((2048, 2048)))
    path = tmp_path / "big.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 2048
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast", "crf": "40", "g": "30"}
        for _ in range(16):
            for packet in stream.encode(av.VideoFrame.from_ndarray(face, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    def peak(max_side: int) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", PEAK, str(path), str(max_side)], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        shape, mib = done.stdout.rsplit(" ", 1)
        return shape, int(mib)

    capped_shape, capped = peak(512)
    full_shape, full = peak(0)
    assert capped_shape == "(512, 512, 3)" and full_shape == "(2048, 2048, 3)"
    assert capped < 160 and full - capped > 120, (capped, full)  # MiB: PyAV + numpy alone are ~50
