"""Extraction reruns keep an output folder true (issue 23, item 4): one key per video file, no mix of
settings, finished videos checked against their files, composition errors and Ctrl-C end cleanly, and every
odd video (FIFO, tiny, variable frame rate, zeroed display matrix, above the decode cap) gets its row."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from skimage import data

from deepfake.data.media import video_files
from deepfake.errors import ConfigError, DataError
from deepfake.extraction.pipeline import PAUSE_ENV, extract
from deepfake.extraction.sources import list_videos
from tests.conftest import ROOT, run_cli
from tests.test_extract_run import OPTS, csv_rows, extract_cfg
from tests.videos import VideoSet, pan_windows, render, write_vfr_video, write_video, zero_display_matrix


def test_two_files_that_differ_only_by_extension_are_refused_naming_both(tmp_path: Path) -> None:
    """dup.mp4 and dup.mkv got one key: the second's crops replaced the first's."""
    for name in ("real/dup.mp4", "real/dup.mkv", "real/other.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    ds = OmegaConf.create({"kind": "folder", "real_dirs": ["real"], "fake_dirs": ["fake"]})
    with pytest.raises(DataError, match=r"^1 video name\(s\) differ only by extension, and would share one crops "
                       r"folder and video id: real/dup.mkv and real/dup.mp4; rename or move one of each"):  # fmt: skip
        list_videos(ds, tmp_path)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'real/dup.mkv'} and {tmp_path / 'real/dup.mp4'} have the "
                       r"same video id 'dup'"):  # fmt: skip
        video_files(tmp_path / "real")  # the FF++, Celeb-DF and DFDC layouts' listing


@pytest.mark.slow  # three small extractions (MTCNN on the CPU)
def test_a_rerun_refuses_other_settings_redoes_missing_crops_and_overwrites_on_request(
    test_videos: VideoSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "videos"
    for name, video in (("real/a.mp4", test_videos.five), ("fake/b.mp4", test_videos.five)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / name)
    out = tmp_path / "out"
    extract(extract_cfg(root, out, "frames_per_video=2"))
    settings = (out / "extraction.json").read_text()
    with pytest.raises(ConfigError) as caught:  # faces.size=128 after 64 mixed crop sizes silently
        extract(extract_cfg(root, out, "frames_per_video=2", "faces.size=32", "faces.format=jpg"))
    assert str(caught.value) == (
        f"{out} holds 2 video(s) extracted with other settings (faces.format: png -> jpg; faces.size: 64 -> 32); "
        "extract into another folder (out=/other/folder), or pass overwrite=true to delete its crops and start over"
    )
    assert (out / "extraction.json").read_text() == settings  # not rewritten by the refused run

    shutil.rmtree(out / "faces/real/a")  # a finished video's crops deleted: "2 already done" kept its rows
    with caplog.at_level(logging.INFO):
        extract(extract_cfg(root, out, "frames_per_video=2"))
    assert (
        "1 finished video(s) have crops missing on disk, so they are extracted again: real/a.mp4"
        in caplog.text
    )
    assert "1 already done, 1 to extract" in caplog.text
    rows = csv_rows(out / "manifest.csv")
    assert len(rows) == 4 and all((out / r["path"]).is_file() for r in rows)

    extract(extract_cfg(root, out, "frames_per_video=2", "faces.size=32", "overwrite=true"))
    rows = csv_rows(out / "manifest.csv")
    assert len(rows) == 4 and {image_size(out / r["path"]) for r in rows} == {(32, 32)}
    assert sorted(p.name for p in (out / "faces/real/a").glob("*.png")) == ["000000.png", "000004.png"]


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


@pytest.mark.cli
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("faces.size=abc", "error: Error merging override faces.size=abc Value 'abc' of type 'str' could not be "
                           "converted to Integer"),
        ("dataset=nope", "error: In 'extract': Could not find 'dataset/nope'"),
        ("bogus_key=1", "error: Could not override 'bogus_key'."),
        ("faces.margin=nan", "error: faces.margin=nan is not a finite number"),
    ],
)  # fmt: skip
def test_extract_composition_and_value_errors_are_one_line_and_exit_2(
    tmp_path: Path, override: str, message: str
) -> None:
    (tmp_path / "videos/real").mkdir(parents=True)
    done = run_cli([str(ROOT / "extract.py"), f"root={tmp_path / 'videos'}", f"out={tmp_path / 'out'}", override],
                   cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not (tmp_path / "out/extraction.json").exists()


@pytest.mark.slow
@pytest.mark.cli
def test_ctrl_c_during_extraction_ends_cleanly(test_videos: VideoSet, tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the terminal's group: decode workers printed their KeyboardInterrupt."""
    root = tmp_path / "videos"
    for i in range(4):
        (root / "real").mkdir(parents=True, exist_ok=True)
        shutil.copy(test_videos.five, root / f"real/v{i}.mp4")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PAUSE_ENV: "2"}
    args = [
        str(ROOT / "extract.py"),
        f"root={root}",
        f"out={out}",
        *OPTS,
        "num_workers=1",
        "frames_per_video=2",
    ]
    # A terminal's Ctrl-C: default SIGINT in the child, even under a runner started in the background (where the
    # shell ignores SIGINT and Python, finding it ignored, installs no KeyboardInterrupt handler).
    proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    part = out / "parts/shard-00000-of-00001.videos.csv"
    deadline = time.monotonic() + 240
    while not (part.is_file() and part.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the extraction ended or hung"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and stderr.strip() == "interrupted", (stdout[-3000:], stderr[-3000:])
    assert csv_rows(part)[0]["status"] == "ok"  # the committed video stays committed


@pytest.mark.slow
@pytest.mark.cli
def test_odd_videos_each_get_their_row_and_nothing_blocks(test_videos: VideoSet, tmp_path: Path) -> None:
    root = tmp_path / "videos/real"
    root.mkdir(parents=True)
    shutil.copy(test_videos.five, root / "face.mp4")
    os.mkfifo(root / "fifo.mp4")  # opening it for reading blocked forever
    (root / "linked.mp4").symlink_to(root / "fifo.mp4")
    for side in (1, 32):  # MTCNN failed on them: torch.cat(): expected a non-empty list
        write_video(root / f"tiny{side}.mp4", [np.full((side, side, 3), 99, np.uint8)] * 3, pix_fmt="yuv444p")
    faces = [render(data.astronaut(), w, 128) for w in pan_windows(60)]
    write_vfr_video(root / "vfr.mp4", faces, [10] * 40 + [500] * 20)  # 14 of 32 frames and still `ok`
    zero_display_matrix(test_videos.five, root / "zeroed.mp4")  # rotation was -2147483648
    write_video(root / "wide.mp4", [np.full((16, 8192, 3), 90, np.uint8)] * 2)  # above the 4096 decode cap
    out = tmp_path / "out"
    done = run_cli([str(ROOT / "extract.py"), f"root={tmp_path / 'videos'}", f"out={out}", *OPTS,
                    "num_workers=1", "frames_per_video=32"], cwd=tmp_path, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["source"]: r for r in csv_rows(out / "videos.csv")}
    fifo = "ValueError: not a regular file: a FIFO (named pipe); only regular files are read"
    assert (rows["real/fifo.mp4"]["status"], rows["real/fifo.mp4"]["error"]) == ("error", fifo)
    assert (rows["real/linked.mp4"]["status"], rows["real/linked.mp4"]["error"]) == ("error", fifo)
    for side in (1, 32):
        assert (rows[f"real/tiny{side}.mp4"]["status"], rows[f"real/tiny{side}.mp4"]["error"]) == (
            "no_face",
            "",
        )
    vfr = rows["real/vfr.mp4"]
    assert vfr["status"] == "short" and vfr["error"].startswith(
        f"the stream ended after {vfr['frames_decoded']} of the 32 frames asked for"
    )
    assert (rows["real/zeroed.mp4"]["status"], rows["real/zeroed.mp4"]["rotation"]) == ("short", "0")
    wide = rows["real/wide.mp4"]
    assert (wide["width"], wide["height"], wide["scale"]) == ("8192", "16", "0.5")
    assert rows["real/face.mp4"]["scale"] == "1.0"
