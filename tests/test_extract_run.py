"""`python extract.py` end to end on real faces (MTCNN on the CPU): statuses, crops that land on the face,
a manifest that trains and passes the pre-flight check, resume after `kill -9`, shards, FF++ box reuse."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig
from PIL import Image

from deepfake.data.convert import convert
from deepfake.data.manifest import read_manifest
from deepfake.data.sbi import landmark_path
from deepfake.extraction.config import register_extract_config
from deepfake.extraction.crops import invert, map_box
from deepfake.extraction.pipeline import PAUSE_ENV, extract
from deepfake.extraction.settings import read_settings
from deepfake.runs.checkpoint import load_checkpoint
from tests.conftest import CONF, FAST, ROOT, run_cli
from tests.test_extract import make_ffpp_videos
from tests.videos import VideoSet

pytestmark = pytest.mark.slow
register_extract_config()
# The test faces are 37-60 px in 128 px frames: look for faces from 20 px, at full size.
OPTS = ["frames_per_video=8", "faces.size=64", "num_workers=0", "progress=off", "detector.device=cpu",
        "detector.min_face_size=20"]  # fmt: skip


def extract_cfg(root: Path, out: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF / "extract"), version_base="1.3"):
        return compose("extract", [f"root={root}", f"out={out}", *OPTS, *overrides])


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def place(videos: dict[str, Path], root: Path) -> Path:
    for rel, src in videos.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    return root


def layout(v: VideoSet) -> dict[str, Path]:
    return {
        "train/real/pan.mp4": v.pan, "train/fake/M/mirrored.mp4": v.mirrored,
        "val/real/rotated.mp4": v.rotated, "val/fake/M/five.mp4": v.five, "val/fake/M/coffee.mp4": v.no_face,
        "val/fake/truncated.mp4": v.truncated, "val/fake/notes.mp4": v.not_video,
        "test/fake/two_faces.mp4": v.two_faces, "test/real/brighter.mp4": v.brighter,
    }  # fmt: skip


@pytest.fixture(scope="session")
def extracted(test_videos: VideoSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root, output folder) of one finished extraction of every kind of test video."""
    base = tmp_path_factory.mktemp("extract")
    root = place(layout(test_videos), base / "videos")
    assert extract(extract_cfg(root, base / "out")) == base / "out" / "manifest.csv"
    return root, base / "out"


def test_each_video_gets_its_status(extracted: tuple[Path, Path]) -> None:
    rows = {r["source"]: r for r in csv_rows(extracted[1] / "videos.csv")}
    got = {s: (r["status"], r["frames_decoded"], r["frames_with_face"], r["faces"]) for s, r in rows.items()}
    assert got == {
        "train/real/pan.mp4": ("ok", "8", "8", "8"),
        "train/fake/M/mirrored.mp4": ("ok", "8", "8", "8"),
        "val/real/rotated.mp4": ("ok", "8", "8", "8"),
        "val/fake/M/five.mp4": ("short", "5", "5", "5"),
        "val/fake/M/coffee.mp4": ("no_face", "8", "0", "0"),
        "val/fake/truncated.mp4": ("error", "0", "0", "0"),
        "val/fake/notes.mp4": ("error", "0", "0", "0"),
        "test/fake/two_faces.mp4": ("ok", "8", "8", "8"),
        "test/real/brighter.mp4": ("ok", "8", "8", "8"),
    }
    assert (
        rows["val/real/rotated.mp4"]["rotation"] == "90"
        and rows["val/fake/M/five.mp4"]["frames_total"] == "5"
    )
    assert rows["test/fake/two_faces.mp4"][("width")] == "192" and rows["train/real/pan.mp4"]["fps"] == "25.0"
    assert "Invalid data" in rows["val/fake/notes.mp4"]["error"]
    assert (rows["train/fake/M/mirrored.mp4"]["label"], rows["train/fake/M/mirrored.mp4"]["method"]) == (
        "1",
        "M",
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("name", ["pan", "mirrored", "rotated"])
def test_every_crop_lands_on_the_known_face(
    extracted: tuple[Path, Path], test_videos: VideoSet, name: str
) -> None:
    folder = {"pan": "train/real/pan", "mirrored": "train/fake/M/mirrored", "rotated": "val/real/rotated"}[
        name
    ]
    boxes = test_videos.mirrored_boxes if name == "mirrored" else test_videos.pan_boxes
    crops = csv_rows(extracted[1] / "faces" / folder / "faces.csv")
    assert len(crops) == 8
    for row in crops:
        matrix = np.array([float(row[k]) for k in ("m00", "m01", "m02", "m10", "m11", "m12")]).reshape(2, 3)
        in_crop = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
        back = map_box(invert(matrix), in_crop)  # the box saved in crop pixels, mapped back to the frame
        assert iou(back, boxes[int(row["frame"])]) >= 0.5, (row, boxes[int(row["frame"])])
        image = extracted[1] / "faces" / folder / row["file"]
        assert Image.open(image).size == (64, 64)
        landmarks = np.load(landmark_path(str(image)))  # where SBI looks for them
        assert landmarks.shape == (5, 2) and (landmarks > 0).all() and (landmarks < 64).all()
        assert landmarks[0, 0] < landmarks[1, 0] and landmarks[2, 1] < landmarks[3, 1]  # eyes, nose, mouth


@pytest.mark.cli
def test_the_manifest_trains_and_passes_the_preflight_check(
    extracted: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest = extracted[1] / "manifest.csv"
    rows = read_manifest(manifest)
    assert len(rows) == 8 * 5 + 5 and len({r.path for r in rows}) == len(rows)
    assert {(r.split, r.label) for r in rows if r.video == "fake/M/five"} == {("val", 1)}
    args = [
        "data=manifest",
        f"data.manifest={manifest}",
        *FAST,
        "training.batch_size=4",
        f"base_path={tmp_path}",
    ]
    check = run_cli([str(ROOT / "train.py"), "check=true", *args], cwd=tmp_path, timeout=300)
    out = check.stdout + check.stderr
    assert check.returncode == 0, out[-3000:]
    assert "verdict: OK" in out, out[-3000:]
    # The dataset and config sections warn about nothing; only [hardware] may (no GPU on a test machine).
    assert [line for line in out.splitlines() if "WARNING" in line and "[hardware]" not in line] == []
    assert "train: 16 images, 2 videos | real 8 (real: 8) | fake 8 (M: 8)" in out
    run = run_cli([str(ROOT / "train.py"), *args, "training.num_epochs=1"], cwd=tmp_path, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    (best,) = tmp_path.glob("outputs/*/*/checkpoints/best.pt")
    # The crop settings extract.py saved beside the manifest travel in the checkpoint, for predict.py.
    # (the checked prediction keys: the file also records what a rerun must share, e.g. the dataset layout)
    saved = read_settings(extracted[1])
    assert load_checkpoint(best)["extraction"] == saved and saved["faces"]["size"] == 64
    # The README's third command: evaluate the checkpoint on an extracted manifest (its test rows).
    evaluate = [str(ROOT / "evaluate.py"), f"checkpoint={best}", f"data.test_sets=[{manifest}]",
                "data.num_workers=0", "eval.bootstrap_samples=50", f"eval.out_dir={tmp_path / 'eval'}"]  # fmt: skip
    scored = run_cli(evaluate, cwd=tmp_path, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    (metrics,) = (tmp_path / "eval").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["counts"]["images"] == 16  # two_faces and brighter, 8 crops each


def test_a_rerun_skips_finished_videos(
    extracted: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, out = extracted
    crop = out / "faces/train/real/pan/000000.png"
    before, manifest = crop.stat().st_mtime_ns, (out / "manifest.csv").read_text()
    with caplog.at_level("INFO"):
        extract(extract_cfg(root, out))
    assert "9 already done, 0 to extract" in caplog.text
    assert crop.stat().st_mtime_ns == before and (out / "manifest.csv").read_text() == manifest


def test_two_shards_give_the_same_manifest_as_one_run(extracted: tuple[Path, Path], tmp_path: Path) -> None:
    root, whole = extracted
    out = tmp_path / "sharded"
    assert extract(extract_cfg(root, out, "shard.count=2", "shard.index=1")) is None
    assert not (out / "manifest.csv").exists()  # shard 0 has not run yet
    assert extract(extract_cfg(root, out, "shard.count=2", "shard.index=0")) == out / "manifest.csv"
    assert (out / "manifest.csv").read_text() == (whole / "manifest.csv").read_text()
    drop = ("seconds",)
    strip = lambda p: [{k: v for k, v in r.items() if k not in drop} for r in csv_rows(p)]  # noqa: E731
    assert strip(out / "videos.csv") == strip(whole / "videos.csv")
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        "shard-00000-of-00002.manifest.csv", "shard-00000-of-00002.videos.csv",
        "shard-00001-of-00002.manifest.csv", "shard-00001-of-00002.videos.csv",
    ]  # fmt: skip


def test_every_face_with_its_index_and_jpeg(test_videos: VideoSet, tmp_path: Path) -> None:
    root = place({"fake/two.mp4": test_videos.two_faces}, tmp_path / "videos")
    extract(extract_cfg(root, tmp_path / "out", "faces.policy=all", "faces.format=jpg", "frames_per_video=2"))
    crops = csv_rows(tmp_path / "out/faces/fake/two/faces.csv")
    settings = json.loads((tmp_path / "out/extraction.json").read_text())
    assert (settings["frames_per_video"], settings["faces"]["policy"]) == (2, "all")
    assert [r["file"] for r in crops] == ["000000_0.jpg", "000000_1.jpg", "000011_0.jpg", "000011_1.jpg"]
    centres = sorted(float(r["frame_x1"]) + float(r["frame_x2"]) for r in crops[:2])
    assert centres[0] / 2 < 96 < centres[1] / 2  # one face in each half
    manifest = read_manifest(tmp_path / "out/manifest.csv")
    assert [Path(r.path).name for r in manifest] == [r["file"] for r in crops]


def test_ffpp_fakes_reuse_their_originals_boxes(test_videos: VideoSet, tmp_path: Path) -> None:
    root = make_ffpp_videos(tmp_path / "ffpp", test_videos.five)
    out = tmp_path / "out"
    extract(
        extract_cfg(root, out, "dataset=ffpp", "dataset.compression=c23", "dataset.reuse_source_boxes=true")
    )
    original = csv_rows(out / "faces/original_sequences/youtube/c23/videos/003/faces.csv")
    fake = csv_rows(out / "faces/manipulated_sequences/Deepfakes/c23/videos/003_000/faces.csv")
    assert len(original) == len(fake) == 5
    frame_box = ("frame", "score", "frame_x1", "frame_y1", "frame_x2", "frame_y2")
    assert [[r[k] for k in frame_box] for r in fake] == [[r[k] for k in frame_box] for r in original]
    matrix = ("m00", "m01", "m02", "m10", "m11", "m12")  # from the saved box (1e-3 px): the same crop region
    as_array = lambda rows: np.array([[float(r[k]) for k in matrix] for r in rows])  # noqa: E731
    np.testing.assert_allclose(as_array(fake), as_array(original), atol=2e-3)
    rows = read_manifest(out / "manifest.csv")
    by_video = {r.video: r for r in rows}
    assert (by_video["Deepfakes/003_000"].identity, by_video["Deepfakes/003_000"].split) == (
        "000_003",
        "train",
    )
    # The converter reads the crops tree too (it keeps FF++'s videos/ folders), with the same rows.
    converted, _ = convert("ffpp", out / "faces", split_dir=root / "splits")
    assert sorted(converted, key=lambda r: r.path) == sorted(rows, key=lambda r: r.path)
    # A rerun with val_fraction only reassembles: the train pair (one identity group) moves to val whole.
    extract(extract_cfg(root, out, "dataset=ffpp", "dataset.reuse_source_boxes=true", "val_fraction=0.9"))
    moved = read_manifest(out / "manifest.csv")
    assert {r.split for r in moved if r.identity == "000_003"} == {"val"} and len(moved) == len(rows)
    assert {r["split"] for r in csv_rows(out / "videos.csv")} == {"val"}


@pytest.mark.slow
def test_ffpp_masks_are_cropped_with_their_fakes_boxes(
    test_videos: VideoSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each fake's mask video is cropped at the fake's frames with its boxes into faces/<video>/masks/ and named
    in the manifest's mask column. The mask videos here are copies of the fakes themselves, so each mask crop
    must be its face crop in grey, pixel for pixel; a fake without a mask video gets an empty cell and a note."""
    root = make_ffpp_videos(tmp_path / "ffpp", test_videos.five)
    for pair in ("000_003", "003_000", "010_011"):  # 011_010 has none
        dest = root / "manipulated_sequences/Deepfakes/masks/videos" / f"{pair}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(test_videos.five, dest)
    out = tmp_path / "out"
    cfg = extract_cfg(root, out, "dataset=ffpp", "dataset.reuse_source_boxes=true", "dataset.masks=true")
    extract(cfg)
    assert (out / "manifest.csv").read_text().splitlines()[0] == "path,label,split,video,method,identity,mask"
    rows = read_manifest(out / "manifest.csv")  # every named mask file exists
    masked = [r for r in rows if r.mask]
    assert {r.video for r in masked} == {"Deepfakes/000_003", "Deepfakes/003_000", "Deepfakes/010_011"}
    assert len(masked) == 15 and not [r for r in rows if r.label == 0 and r.mask]
    for r in masked:
        assert Path(r.mask) == Path(r.path).parent / "masks" / Path(r.path).name
        face = np.asarray(Image.open(r.path).convert("L"))
        assert np.array_equal(np.asarray(Image.open(r.mask)), face)
    assert not [r for r in rows if r.video == "Deepfakes/011_010" and r.mask]
    assert (
        "1 fake(s) have no mask video (e.g. manipulated_sequences/Deepfakes/masks/videos/011_010.mp4"
        in caplog.text
    )


@pytest.mark.cli
def test_kill_9_in_the_middle_of_a_video_then_rerun(test_videos: VideoSet, tmp_path: Path) -> None:
    root = place({"real/a.mp4": test_videos.five, "real/b.mp4": test_videos.pan, "fake/c.mp4": test_videos.five},
                 tmp_path / "videos")  # fmt: skip
    out = tmp_path / "out"
    args = [str(ROOT / "extract.py"), f"root={root}", f"out={out}", *OPTS, "num_workers=1", "progress=plain"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PAUSE_ENV: "3"}
    proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env)
    part, partial = out / "parts/shard-00000-of-00001.videos.csv", out / ".partial"
    deadline = time.monotonic() + 240
    # Wait for one committed video and the next one's crops written but not yet moved into place.
    while not (part.is_file() and part.read_text().count("\n") >= 2 and list(partial.rglob("*.png"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the extraction ended or hung"
        time.sleep(0.05)
    helpers = psutil.Process(proc.pid).children(recursive=True)  # the decode worker and its forkserver
    assert helpers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert alive == []  # no orphaned decoders left behind
    committed = {r["source"] for r in csv_rows(part)}
    assert len(committed) == 1 and not (out / "manifest.csv").exists()
    on_disk = {p.relative_to(out / "faces").as_posix() for p in (out / "faces").glob("*/*") if p.is_dir()}
    assert on_disk == {c.removesuffix(".mp4") for c in committed}  # no half-written video in faces/
    first = next((out / "faces").rglob("*.png"))
    stamp = first.stat().st_mtime_ns
    rerun = run_cli(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == len({r.path for r in rows}) == 5 + 8 + 5
    assert sorted(r["source"] for r in csv_rows(out / "videos.csv")) == [
        "fake/c.mp4",
        "real/a.mp4",
        "real/b.mp4",
    ]
    assert first.stat().st_mtime_ns == stamp  # the committed video was not redone
    assert list(partial.rglob("*")) == []  # the killed video's partial crops are gone


@pytest.mark.cli
def test_the_cli_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    proc = run_cli(
        [str(ROOT / "extract.py"), f"root={tmp_path / 'nope'}", f"out={tmp_path / 'o'}"], cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: root={tmp_path / 'nope'} does not exist")
    cfg = extract_cfg(
        tmp_path, tmp_path / "o", "dataset=ffpp", "dataset.compression=c40"
    )  # as the README writes it
    assert (cfg.dataset.kind, cfg.dataset.compression, cfg.detector.kind) == ("ffpp", "c40", "mtcnn")
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'faces.colour'"):
        extract_cfg(tmp_path, tmp_path / "o", "faces.colour=1")  # the schema refuses unknown keys
