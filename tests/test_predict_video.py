"""predict.py on videos: decode, detect and crop as extract.py does, score, aggregate, one row per video.

The end-to-end tests (slow: MTCNN on the CPU) share one tiny detector trained per module on face crops cut (at the known boxes) from the pan video's frames
(real) and the brighter copy's (fake), so its verdict on whole videos can be checked end to end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from deepfake.extraction.crops import crop_face
from deepfake.extraction.face_finder import Detection
from deepfake.extraction.video import read_frames
from deepfake.prediction.driver import predict
from deepfake.prediction.inputs import NOT_A_VIDEO, video_kind
from deepfake.prediction.videos import Aggregation, VideoResult, classify_video
from tests.conftest import CONF, FAST, ROOT, run_cli
from tests.videos import VideoSet

FRAMES = 3  # MTCNN on the CPU is slow: few frames per video


def _write_crops(video: Path, boxes: list[np.ndarray], root: Path, label: str) -> None:
    """Crops at the known face boxes: even frames train, 1 mod 4 validate, 3 mod 4 test."""
    for index, frame in read_frames(video, 40).frames:
        crop = crop_face(frame, Detection(boxes[index].astype(np.float32), 1.0, None), 1.3, 64).image
        split = "train" if index % 2 == 0 else ("val" if index % 4 == 1 else "test")
        path = root / split / label / f"{split}_{label}" / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(path)


@pytest.fixture(scope="module")
def detector_run(test_videos: VideoSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that calls the brighter video's faces fake and the pan video's real."""
    from train import train

    base = tmp_path_factory.mktemp("video_detector")
    for video, label in ((test_videos.pan, "real"), (test_videos.brighter, "fake")):
        _write_crops(video, test_videos.pan_boxes, base / "data", label)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFAKE_CACHE", str(base / "cache"))
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[*FAST, "data=folder", f"data.root={base / 'data'}", f"base_path={base}",
                           "training.num_epochs=12", "data.augment.crop=false", "eval.bootstrap_samples=0"],
            )  # fmt: skip
        train(cfg)
    (run,) = [p for p in (base / "outputs").glob("*/*") if p.is_dir()]
    return run / "checkpoints" / "last.pt"  # every epoch has val AUC 1; the last has settled batch norms


def _predict(run: Path, inputs: Path | str, output: Path, **extra: object) -> list[dict]:
    return predict({"checkpoint": str(run), "input": str(inputs), "output": str(output), "num_workers": 0,
                    "extraction": {"frames_per_video": FRAMES}, **extra})  # fmt: skip


@pytest.mark.slow
def test_fake_video_scores_above_and_real_below(
    detector_run: Path, test_videos: VideoSet, tmp_path: Path
) -> None:
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{test_videos.brighter}\n{test_videos.pan}\n")
    fake, real = _predict(detector_run, listing, tmp_path / "p.csv")
    assert fake["status"] == real["status"] == "ok"
    assert fake["prob"] > 0.5 > real["prob"], (fake, real)
    assert (fake["pred"], real["pred"]) == ("fake", "real")
    assert fake["frames_used"] == real["frames_used"] == FRAMES
    assert fake["faces_found"] == FRAMES


@pytest.mark.slow
def test_mixed_folder_statuses_per_frame_and_previews(
    detector_run: Path, test_videos: VideoSet, tmp_path: Path
) -> None:
    """One run over a folder of every kind: each input gets its row and status, and the run goes on."""
    folder = tmp_path / "in"
    folder.mkdir()
    for video in (test_videos.pan, test_videos.no_face, test_videos.truncated, test_videos.not_video):
        (folder / video.name).write_bytes(video.read_bytes())
    (folder / "renamed.png").write_bytes(test_videos.five.read_bytes())  # a video named like an image
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / "face.png")
    out = tmp_path / "out" / "preds.csv"
    rows = _predict(detector_run, folder, out, per_frame=True, preview=True)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert list(by_name) == ["coffee.mp4", "face.png", "notes.mp4", "pan.mp4", "renamed.png", "truncated.mp4"]
    assert by_name["pan.mp4"]["status"] == by_name["renamed.png"]["status"] == "ok"
    assert by_name["renamed.png"]["frames_used"] == FRAMES  # decoded as the video it is
    assert by_name["face.png"]["status"] == "ok" and by_name["face.png"]["frames_used"] is None
    no_face = by_name["coffee.mp4"]
    assert (no_face["status"], no_face["prob"], no_face["pred"], no_face["faces_found"]) == (
        "no_face",
        0.5,
        "fake",
        0,
    )
    assert by_name["notes.mp4"]["status"] == "error" and by_name["notes.mp4"]["error"] == NOT_A_VIDEO
    truncated = by_name["truncated.mp4"]
    assert truncated["status"] == "error" and truncated["prob"] is None
    assert truncated["error"].startswith(("InvalidDataError", "FFmpegError", "ValueError")), truncated[
        "error"
    ]
    with open(out, newline="") as f:
        saved = list(csv.DictReader(f))
    assert [r["status"] for r in saved] == [r["status"] for r in rows]
    assert saved[2]["prob"] == "" and saved[2]["error"] == NOT_A_VIDEO
    # per_frame: one row per face; under max-over-faces and mean-over-frames the frames average to the video
    with open(out.with_name("preds.frames.csv"), newline="") as f:
        frames = [r for r in csv.DictReader(f) if r["path"].endswith("pan.mp4")]
    assert len(frames) == FRAMES and [int(r["face"]) for r in frames] == [0] * FRAMES
    assert np.mean([float(r["frame_prob"]) for r in frames]) == pytest.approx(by_name["pan.mp4"]["prob"])
    assert all(r["face_prob"] == r["frame_prob"] for r in frames)  # one face a frame: the frame is its face
    sheets = sorted(p.name for p in (out.parent / "preds_preview").iterdir())
    assert sheets == ["coffee.png", "pan.png", "renamed.png"]  # no sheet for unreadable files
    assert Image.open(out.parent / "preds_preview" / "pan.png").size[0] >= 480


@pytest.mark.slow
def test_json_output_other_aggregations_and_empty_no_face(
    detector_run: Path, test_videos: VideoSet, tmp_path: Path
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{test_videos.pan}\n{test_videos.no_face}\n")
    out = tmp_path / "p.json"
    rows = _predict(detector_run, listing, out, no_face_prob=None, per_frame=True,
                    aggregation={"frames": "max"})  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["predictions"] == rows and saved["aggregation"]["frames"] == "max"
    assert rows[1]["status"] == "no_face" and rows[1]["prob"] is None and rows[1]["pred"] is None
    with open(tmp_path / "p.frames.csv", newline="") as f:
        frames = [float(r["frame_prob"]) for r in csv.DictReader(f)]
    assert rows[0]["prob"] == pytest.approx(max(frames))


def test_content_decides_what_is_a_video(test_videos: VideoSet, tmp_path: Path) -> None:
    renamed = tmp_path / "clip.jpg"
    renamed.write_bytes(test_videos.five.read_bytes())
    image = tmp_path / "face.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert video_kind(str(renamed)) == "video"
    assert video_kind(str(test_videos.not_video)) == "not_video"
    assert (
        video_kind(str(test_videos.truncated)) == "video"
    )  # its header is there; decoding says what is wrong
    assert video_kind(str(image)) == "image"
    assert video_kind(str(tmp_path / "missing.mp4")) == "video"  # the decoder reports the missing file


@pytest.mark.slow
@pytest.mark.cli
def test_cli_one_video_prints_one_line(detector_run: Path, test_videos: VideoSet, tmp_path: Path) -> None:
    out = tmp_path / "one.csv"
    proc = run_cli(
        [str(ROOT / "predict.py"), f"checkpoint={detector_run}", f"input={test_videos.brighter}",
         f"output={out}", f"extraction.frames_per_video={FRAMES}"],
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline="") as f:
        (row,) = list(csv.DictReader(f))
    answers = [line for line in proc.stdout.splitlines() if line.startswith(str(test_videos.brighter))]
    assert answers == [f"{test_videos.brighter}: {float(row['prob']):.4f} fake (ok)"]
    assert row["status"] == "ok" and int(row["frames_used"]) == FRAMES


def test_faces_then_frames_aggregate_as_configured() -> None:
    """Two faces in frame 0, one in frame 5: max (or mean) over faces, then the frame rule, by hand."""
    probs = torch.tensor([0.2, 0.6, 0.9])
    keys = [(0, 0), (0, 1), (5, 0)]
    crops = np.zeros((3, 8, 8, 3), np.uint8)
    seen: list[tuple[int, ...]] = []

    def score(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        assert batch.dtype == torch.uint8  # uint8 until the scorer
        return probs[: len(batch)]

    def run(agg: Aggregation) -> VideoResult:
        return classify_video(VideoResult("v.mp4"), keys, crops, score, agg, torch.device("cpu"))

    result = run(Aggregation("max", "mean"))
    assert seen == [(3, 3, 8, 8)]  # one batch, channels first
    assert result.frame_probs == [(0, pytest.approx(0.6)), (5, pytest.approx(0.9))]
    assert result.prob == pytest.approx((0.6 + 0.9) / 2)
    assert (result.frames_used, result.faces_found) == (2, 3)
    assert [round(p, 3) for _, p, _ in result.top_faces] == [0.9, 0.6, 0.2]  # most suspicious first
    assert run(Aggregation("mean", "mean")).prob == pytest.approx((0.4 + 0.9) / 2)
    assert run(Aggregation("max", "max")).prob == pytest.approx(0.9)
    assert run(Aggregation("mean", "median")).prob == pytest.approx((0.4 + 0.9) / 2)
    assert classify_video(VideoResult("none.mp4", status="no_face"), [], crops[:0], score,
                          Aggregation(), torch.device("cpu")).prob is None  # fmt: skip
