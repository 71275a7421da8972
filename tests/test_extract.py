"""extract.py's parts without a face detector: decoding, rotation, crops, face policy, layouts, shards, writer."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from omegaconf import OmegaConf

from deepfake.data.samples import Sample
from deepfake.errors import ConfigError, DataError
from deepfake.extraction.config import ExtractConfig, validate
from deepfake.extraction.crops import apply, crop_face, invert, select_faces, similarity, template
from deepfake.extraction.face_finder import Detection, YunetFinder, detect_downscaled
from deepfake.extraction.pipeline import extract_video
from deepfake.extraction.report import ExtractProgress, summary
from deepfake.extraction.sources import Job, list_videos, shard_slice
from deepfake.extraction.video import read_frames, sample_indices, upright
from deepfake.extraction.writer import ShardWriter, assemble, done_videos
from tests.videos import VideoSet


def all_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_sample_indices_are_evenly_spaced_and_short_videos_give_all() -> None:
    assert sample_indices(40, 8) == [0, 6, 11, 17, 22, 28, 33, 39]
    assert sample_indices(5, 8) == [0, 1, 2, 3, 4]
    assert sample_indices(300, 32)[:3] == [0, 10, 19] and len(sample_indices(300, 32)) == 32
    assert sample_indices(9, 1) == [4]


def test_seeking_decodes_exactly_the_kept_frames(test_videos: VideoSet) -> None:
    full = all_frames(test_videos.pan)
    decoded = read_frames(test_videos.pan, 8)
    assert decoded.error == "" and decoded.info is not None
    assert (decoded.info.frames, decoded.info.width, decoded.info.height, decoded.info.fps) == (
        40,
        128,
        128,
        25.0,
    )
    assert [i for i, _ in decoded.frames] == sample_indices(40, 8)
    for i, frame in decoded.frames:
        np.testing.assert_array_equal(frame, full[i])


def test_rotation_metadata_turns_frames_upright(test_videos: VideoSet) -> None:
    stored = all_frames(test_videos.rotated)  # PyAV's raw frames are the stored (sideways) pixels
    decoded = read_frames(test_videos.rotated, 4)
    assert decoded.info is not None and decoded.info.rotation == 90
    pan = all_frames(test_videos.pan)
    for i, frame in decoded.frames:
        np.testing.assert_array_equal(frame, np.rot90(stored[i], 1))
        assert np.abs(frame.astype(int) - pan[i]).mean() < 3  # upright again, up to codec noise
    image = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(upright(image, -90), np.rot90(image, -1))
    assert upright(image, 0) is image


@pytest.mark.parametrize("name", ["truncated", "not_video", "missing"])
def test_unreadable_files_come_back_as_errors(test_videos: VideoSet, tmp_path: Path, name: str) -> None:
    path = tmp_path / "nowhere.mp4" if name == "missing" else getattr(test_videos, name)
    decoded = read_frames(path, 8)
    assert decoded.frames == [] and decoded.info is None
    expected = "No such file" if name == "missing" else "Invalid data found when processing input"
    assert expected in decoded.error and str(path) not in decoded.error


def face(box: list[float], score: float = 0.99, landmarks: np.ndarray | None = None) -> Detection:
    return Detection(np.array(box, np.float32), score, landmarks)


def test_square_crop_is_clamped_inside_the_frame_and_maps_back() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8)
    lm = np.array([[8, 10], [20, 10], [14, 16], [9, 22], [19, 22]], np.float32)
    crop = crop_face(frame, face([0, 0, 30, 40], landmarks=lm), margin=1.3, size=52)
    assert crop.image.shape == (52, 52, 3)
    # side 52 (1.3 x 40) would start at -11, -6: shifted to the frame's corner, so 1 crop px = 1 frame px
    np.testing.assert_allclose(crop.matrix, [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(crop.image, frame[:52, :52])
    np.testing.assert_allclose(crop.landmarks, lm)
    np.testing.assert_allclose(crop.box, [0, 0, 30, 40])
    big = crop_face(frame, face([50, 10, 150, 90]), margin=1.3, size=64)  # 130 px > frame height: shrunk
    x0, y0 = apply(invert(big.matrix), np.array([[0.0, 0.0], [64.0, 64.0]]))
    np.testing.assert_allclose([x0[1], y0[1] - x0[1]], [0, 100])  # the full height, as a square
    np.testing.assert_allclose(
        apply(invert(big.matrix), big.box.reshape(2, 2)), [[50, 10], [150, 90]], atol=1e-4
    )


def test_alignment_puts_the_landmarks_on_the_template() -> None:
    frame = np.zeros((200, 200, 3), np.uint8)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, 25.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = template(64, 1.3) @ (scale * rot).T + shift  # a tilted, larger face in the frame
    crop = crop_face(frame, face([0, 0, 150, 150], landmarks=points.astype(np.float32)), 1.3, 64, align=True)
    np.testing.assert_allclose(crop.landmarks, template(64, 1.3), atol=1e-3)
    np.testing.assert_allclose(similarity(points, template(64, 1.3))[:, :2], rot.T / scale, atol=1e-6)


def test_face_policy_keeps_the_largest_or_all_above_size_and_score() -> None:
    faces = [face([0, 0, 40, 40]), face([50, 0, 150, 100]), face([0, 50, 10, 60]), face([0, 0, 90, 90], 0.5)]
    assert [f.box[0] for f in select_faces(faces, "largest", 20, 0.9)] == [50]
    assert [f.box[0] for f in select_faces(faces, "all", 20, 0.9)] == [50, 0]
    assert len(select_faces(faces, "all")) == 4 and select_faces([], "largest") == []


class RecordingDetector:
    """Finds one face at a fixed place of whatever it is given, and records the sizes it saw."""

    name = "recording"
    min_face = 20

    def __init__(self) -> None:
        self.sizes: list[tuple[int, ...]] = []

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        self.sizes += [f.shape for f in frames]
        return [[face([10, 20, 30, 40], landmarks=np.full((5, 2), 10, np.float32))] for _ in frames]


def test_large_frames_are_detected_downscaled_and_boxes_mapped_back() -> None:
    det = RecordingDetector()
    frames = [np.zeros((1080, 1920, 3), np.uint8)] * 5
    found = detect_downscaled(det, frames, max_side=640, min_face=40, batch_size=2)
    assert det.sizes == [(360, 640, 3)] * 5 and len(found) == 5
    np.testing.assert_allclose(found[0][0].box, [30, 60, 90, 120])
    np.testing.assert_allclose(found[0][0].landmarks, 30)
    small = RecordingDetector()
    detect_downscaled(small, [np.zeros((96, 128, 3), np.uint8)], max_side=640, min_face=20, batch_size=2)
    assert small.sizes == [(96, 128, 3)]
    # faces of 80 px and up are all that is asked: a copy where they are the detector's 20 px will do
    sought = RecordingDetector()
    found = detect_downscaled(
        sought, [np.zeros((360, 640, 3), np.uint8)], max_side=640, min_face=80, batch_size=2
    )
    assert sought.sizes == [(90, 160, 3)]
    np.testing.assert_allclose(found[0][0].box, [40, 80, 120, 160])
    mixed = RecordingDetector()  # a stream that changes size: each run of sizes is batched and mapped apart
    frames = [np.zeros((720, 1280, 3), np.uint8)] * 2 + [np.zeros((360, 640, 3), np.uint8)]
    found = detect_downscaled(mixed, frames, max_side=640, min_face=20, batch_size=8)
    assert mixed.sizes == [(360, 640, 3)] * 3
    assert [f[0].box[0] for f in found] == [20, 20, 10]


def test_yunet_needs_a_model_file_and_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"detector.model=None is not a file.*face_detection_yunet"):
        YunetFinder(None)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(ConfigError, match=r"pip install opencv-python-headless"):
        YunetFinder(str(model))


def test_config_values_are_checked() -> None:
    base = OmegaConf.structured(ExtractConfig(root="/r", out="/o"))
    with pytest.raises(ConfigError, match=r"root is not set: pass root="):
        validate(OmegaConf.structured(ExtractConfig(out="/o")))
    with pytest.raises(ConfigError, match=r"shard.index=2 must be in \[0, shard.count=2\)"):
        validate(OmegaConf.merge(base, {"shard": {"index": 2, "count": 2}}))
    with pytest.raises(ConfigError, match=r"faces.policy='biggest' is not one of largest, all"):
        validate(OmegaConf.merge(base, {"faces": {"policy": "biggest"}}))
    with pytest.raises(ConfigError, match=r"reuse_source_boxes=true is for dataset=ffpp"):
        validate(OmegaConf.merge(base, {"dataset": {"reuse_source_boxes": True}}))
    with pytest.raises(
        ConfigError, match=r"dataset.masks=true crops FF\+\+'s mask videos: it is for dataset=ffpp"
    ):
        validate(OmegaConf.merge(base, {"dataset": {"masks": True}}))


def make_ffpp_videos(root: Path, video: Path) -> Path:
    """FF++ as downloaded: originals 000, 003, 010, 011 and their Deepfakes, all copies of `video`."""
    for vid in ("000", "003", "010", "011"):
        dest = root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(video.read_bytes())
    for pair in ("000_003", "003_000", "010_011", "011_010"):
        dest = root / "manipulated_sequences/Deepfakes/c23/videos" / f"{pair}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(video.read_bytes())
    (root / "splits").mkdir()
    for split, pairs in {"train": [["000", "003"]], "val": [["010", "011"]], "test": []}.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    return root


def test_ffpp_videos_take_the_converters_splits_and_fakes_reuse_their_targets_boxes(
    test_videos: VideoSet, tmp_path: Path
) -> None:
    root = make_ffpp_videos(tmp_path / "ffpp", test_videos.five)
    ds = OmegaConf.merge(
        OmegaConf.structured(ExtractConfig).dataset, {"kind": "ffpp", "reuse_source_boxes": True}
    )
    jobs, notes = list_videos(ds, root)
    by_video = {j.sample.video: j for j in jobs}
    fake, real = by_video["Deepfakes/003_000"], by_video["youtube/010"]
    assert (fake.sample.label, fake.sample.split, fake.sample.identity) == (1, "train", "000_003")
    assert (real.sample.label, real.sample.split, real.sample.identity) == (0, "val", "010_011")
    assert fake.rel == "manipulated_sequences/Deepfakes/c23/videos/003_000.mp4"
    assert fake.box_source == "original_sequences/youtube/c23/videos/003.mp4"
    assert real.box_source is None and notes == []
    shards = [shard_slice(jobs, i, 3) for i in range(3)]
    assert sorted(j.rel for s in shards for j in s) == sorted(j.rel for j in jobs)  # a partition
    for shard in shards:  # each fake sits after its original, in the same shard
        rels = [j.rel for j in shard]
        for j in shard:
            if j.box_source:
                assert rels.index(j.box_source) < rels.index(j.rel)
    assert shard_slice(jobs, 1, 3) == shards[1]  # deterministic
    with pytest.raises(DataError, match=r"not an FF\+\+ tree: expected .*\[videos/\]<video>.mp4"):
        list_videos(ds, tmp_path)


def test_folder_of_videos_needs_video_files(tmp_path: Path) -> None:
    ds = OmegaConf.structured(ExtractConfig).dataset
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"no video files \(.mp4.*\) under .*holds: real"):
        list_videos(ds, tmp_path)


def test_writer_repairs_torn_parts_and_assembles_only_when_all_are_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    writer = ShardWriter(out, "shard-0")
    tmp = writer.temp_dir("real/a.mp4")
    (tmp / "000000.png").write_bytes(b"png")
    row = {"source": "real/a.mp4", "video": "real/a", "status": "ok", "faces": 1}
    writer.commit("real/a.mp4", tmp, [["faces/real/a/000000.png", 0, "train", "real/a", "real", ""]], row)
    assert (out / "faces/real/a/000000.png").is_file() and not tmp.exists()
    # a run killed after the manifest rows of b, and in the middle of its videos row
    with writer.manifest_part.open("a") as f:
        f.write("faces/real/b/000000.png,0,train,real/b,real,\n")
    with writer.videos_part.open("a") as f:
        f.write("real/b.mp4,real/b,0,tr")
    assert set(done_videos(out)) == {"real/a.mp4"}
    assert assemble(out, ["real/a.mp4", "real/b.mp4"]) == ["real/b.mp4"]
    assert not (out / "manifest.csv").exists()
    ShardWriter(out, "shard-0")  # the rerun's start
    assert (
        writer.manifest_part.read_text().count("\n") == 2 and "real/b" not in writer.videos_part.read_text()
    )
    assert assemble(out, ["real/a.mp4"]) == []
    assert (out / "manifest.csv").read_text() == (
        "path,label,split,video,method,identity\nfaces/real/a/000000.png,0,train,real/a,real,\n"
    )


class FailingDetector:
    name = "failing"
    min_face = 20

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        raise RuntimeError("CUDA out of memory")


def test_a_detector_failure_is_a_row_not_a_crash(test_videos: VideoSet, tmp_path: Path) -> None:
    cfg = validate(OmegaConf.structured(ExtractConfig(root=str(tmp_path), out=str(tmp_path))))
    job = Job(Sample(str(test_videos.five), 0, "real/five", "real", "train"), "real/five.mp4")
    row = extract_video(
        job, read_frames(test_videos.five, 8), 0.1, cfg, FailingDetector(), ShardWriter(tmp_path, "s")
    )
    assert (row["status"], row["frames_total"], row["faces"]) == ("error", 5, 0)
    assert row["error"] == "face detection failed: RuntimeError: CUDA out of memory"
    assert done_videos(tmp_path)["real/five.mp4"]["status"] == "error" and not (tmp_path / "faces").exists()


@pytest.mark.parametrize("mode", ["rich", "plain"])
def test_progress_counts_videos_and_faces(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"), ExtractProgress(3, mode, every_n_seconds=3600) as progress:
        progress.update(4)
        progress.update(1)
        progress.update(0)  # the last video: plain mode logs it whatever the interval
    assert progress.line(time.perf_counter()).startswith("videos 3/3 (100%) | 5 faces, ")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("videos ")]
    if mode == "plain":
        assert (
            len(logged) == 1
            and logged[0].startswith("videos 3/3 (100%) | 5 faces")
            and logged[0].endswith("ETA 0s")
        )
    else:  # the bars draw on the terminal, not in the log
        assert logged == []


def test_summary_names_statuses_slowest_and_rows_to_look_at() -> None:
    def row(source: str, status: str, decoded: int, with_face: int, seconds: float, error: str = "") -> dict:
        return {"source": source, "status": status, "frames_decoded": str(decoded), "frames_with_face": str(with_face),
                "faces": str(with_face), "seconds": str(seconds), "error": error}  # fmt: skip

    rows = [row("a.mp4", "ok", 32, 32, 1.0), row("b.mp4", "ok", 32, 10, 3.0), row("c.mp4", "error", 0, 0, 0.1, "bad"),
            row("d.mp4", "short", 5, 5, 0.5)]  # fmt: skip
    lines = summary(rows, skipped=2, seconds=65)
    assert (
        lines[0]
        == "extracted 4 video(s) in 1m05s (2 already done, skipped): ok 2, short 1, error 1; 47 face crops"
    )
    assert lines[1].startswith("slowest: b.mp4 3.00s, a.mp4 1.00s, d.mp4 0.50s")
    assert lines[2] == (
        "3 video(s) need a look: b.mp4 (a face in only 10 of 32 frames); c.mp4 (error: bad); d.mp4 (short)"
    )


class FakeYunet:
    """OpenCV's FaceDetectorYN as its docs describe its output: x, y, w, h, 5 landmarks (x, y), score."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def setInputSize(self, size: tuple[int, int]) -> None:  # OpenCV's name
        self.sizes.append(size)

    def detect(self, image: np.ndarray) -> tuple[int, np.ndarray | None]:
        if image.mean() == 0:
            return 0, None
        row = [10, 20, 30, 40, 15, 30, 30, 30, 22, 40, 16, 50, 29, 50, 0.93]
        return 1, np.array([row], np.float32)


def test_yunet_rows_become_detections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeYunet()
    cv2 = type(sys)("cv2")
    cv2.COLOR_RGB2BGR = 4
    cv2.cvtColor = lambda image, code: image[..., ::-1]
    cv2.FaceDetectorYN = type("FaceDetectorYN", (), {"create": staticmethod(lambda *a: fake)})
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    model = tmp_path / "yunet.onnx"
    model.write_bytes(b"onnx")
    found = YunetFinder(str(model)).detect(
        [np.full((60, 80, 3), 9, np.uint8), np.zeros((60, 80, 3), np.uint8)]
    )
    assert fake.sizes == [(80, 60), (80, 60)] and found[1] == []
    (face,) = found[0]
    np.testing.assert_allclose(face.box, [10, 20, 40, 60])
    np.testing.assert_allclose(face.landmarks, [[15, 30], [30, 30], [22, 40], [16, 50], [29, 50]])
    assert face.score == pytest.approx(0.93)
