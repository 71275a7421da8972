"""Split leakage (by path, by file content, by video id) and 16-bit images, on real files."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.checks.start import dataset_findings
from deepfake.data.decode import decode_file
from deepfake.data.manifest import write_manifest
from deepfake.data.samples import Sample, scan_folder
from deepfake.data.verify import find_leaks, inspect_images
from deepfake.errors import DataError
from deepfake.evaluation.metrics import detection_metrics, note_one_frame_videos
from deepfake.training.preflight import check
from tests.conftest import FAST, make_folder_dataset


def manifest_rows(root: Path) -> list[Sample]:
    return scan_folder(root, ["train", "val"], ["real"], ["fake"])


def errors(samples: dict[str, list[Sample]]) -> list[str]:
    return [f.text for f in dataset_findings(samples) if f.level == "error"]


def by_split(rows: list[Sample]) -> dict[str, list[Sample]]:
    return {split: [r for r in rows if r.split == split] for split in ("train", "val")}


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_same_path_in_two_splits_stops_training_and_fails_the_check(compose_cfg, tmp_path: Path) -> None:
    """The row's video column differs, so only the path gives the leak away (the old check missed it)."""
    from train import train

    root = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    rows = manifest_rows(root)
    leaked = replace(rows[0], split="val", video="other/video")
    manifest = write_manifest([*rows, leaked], tmp_path / "manifest.csv")
    base = [*FAST, "data=manifest", f"data.manifest={manifest}", f"base_path={tmp_path}"]
    expected = f"leakage: 1 file(s) are listed in more than one split: {leaked.path} (train+val)"
    with pytest.raises(DataError, match=r"leakage: 1 file\(s\) are listed in more than one split: "):
        train(compose_cfg(base))
    assert not list(tmp_path.glob("outputs/*/*/checkpoints/*.pt"))
    report = check(compose_cfg(base))
    found = [f.text for section, f in report.findings if section == "dataset" and f.level == "error"]
    assert [t for t in found if t.startswith("leakage")] == [
        expected + "; validation scores would be inflated. List each file in one split only"
    ]
    assert not report.ok


def test_identical_bytes_under_another_name_are_leakage_and_equal_sizes_alone_are_not(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    rows = manifest_rows(root)
    source = Path(next(r.path for r in rows if r.split == "train" and r.path.endswith(".png")))
    copy = root / "val" / "real" / "renamed" / "copy.png"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(source, copy)
    # Same size as the copy, different bytes: must be hashed and found different.
    twin = root / "val" / "real" / "renamed" / "twin.png"
    data = bytearray(source.read_bytes())
    data[-20] ^= 0xFF
    twin.write_bytes(bytes(data))
    rows = manifest_rows(root)
    leaks = [x for x in find_leaks(by_split(rows)) if x.kind == "content"]
    assert [(x.key, x.splits) for x in leaks] == [(f"{source} = {copy}", ("train", "val"))]
    texts = errors(by_split(rows))
    assert any(
        t.startswith("leakage: 1 set(s) of identical files (same bytes under different names) are in more")
        and f"{source} = {copy} (train+val)" in t
        for t in texts
    )
    assert not any("twin.png" in t for t in texts)


def test_same_video_id_in_two_splits_is_leakage_though_files_differ(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    rows = manifest_rows(root)
    rows = [
        replace(r, video="shared/clip") if r.path.endswith("0000.jpg") and r.label == 0 else r for r in rows
    ]
    leaks = find_leaks(by_split(rows))
    assert [(x.kind, x.key, x.splits) for x in leaks] == [("video", "shared/clip", ("train", "val"))]
    assert any(
        t.startswith("leakage: 1 video id(s) appear in more than one split: shared/clip")
        for t in errors(by_split(rows))
    )


def test_loose_images_with_the_same_name_in_two_splits_are_not_leakage(tmp_path: Path) -> None:
    """Loose images in class folders are keyed by their path: `0001.png` in train and in val are two videos."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("real", "fake"):
            for i in range(2):
                img = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
                (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i:04d}.png")
    rows = manifest_rows(tmp_path)
    assert {r.video for r in rows if r.split == "train" and r.label == 0} == {
        "train/real/0000.png",
        "train/real/0001.png",
    }
    assert find_leaks(by_split(rows)) == []


def write_gradient_png16(path: Path) -> np.ndarray:
    """A real 16-bit greyscale PNG: a horizontal ramp 0 .. 65535."""
    ramp = np.tile(np.linspace(0, 65535, 16).round().astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    return ramp


def test_a_16_bit_png_decodes_to_a_scaled_gradient_not_white(tmp_path: Path) -> None:
    ramp = write_gradient_png16(tmp_path / "g16.png")
    image = decode_file(str(tmp_path / "g16.png"), None)
    assert image.dtype.__str__() == "torch.uint8" and tuple(image.shape) == (3, 16, 16)
    expected = np.rint(ramp[0] / 257).astype(np.uint8)
    assert image[0, 0].tolist() == expected.tolist()
    assert image[0, 0, 0] == 0 and image[0, 0, 7] == 119 and image[0, 0, -1] == 255
    assert (image[0] == image[1]).all() and (image[1] == image[2]).all()


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_the_check_reports_16_bit_images(compose_cfg, tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    wide = next((root / "train" / "real").rglob("*.png"))
    write_gradient_png16(wide)
    report = inspect_images([str(next(root.rglob("*.jpg"))), str(wide)])
    assert report.issues == [] and report.wide == [str(wide)]
    assert report.sizes.tolist() == [[32, 32], [16, 16]]
    result = check(compose_cfg([*FAST, "data=folder", f"data.root={root}", f"base_path={tmp_path}"]))
    warnings = [f.text for section, f in result.findings if section == "dataset" and f.level == "warning"]
    assert f"1 16-bit image(s) (PIL mode I;16): {wide}; they are scaled to 8 bits when loaded" in warnings[0]
    assert result.ok  # scaled, so training can use it


def test_one_frame_videos_are_said_once_to_repeat_the_frame_metrics(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.array([0, 1, 0, 1])
    probs = np.array([0.2, 0.7, 0.4, 0.6])
    note_one_frame_videos.cache_clear()
    with caplog.at_level(logging.INFO, logger="deepfake.metrics"):
        for _ in range(3):
            out = detection_metrics(labels, probs, ["a", "b", "c", "d"])
        detection_metrics(labels, probs, ["a", "a", "c", "d"])  # grouped videos: nothing to say
    said = [r.getMessage() for r in caplog.records if "every video has one frame" in r.getMessage()]
    assert (
        len(said) == 1 and "video-level metrics (video_auc, video_acc, video_eer) equal the frame" in said[0]
    )
    assert out["val/video_auc"] == out["val/auc"] == 1.0


def test_large_files_sharing_only_their_head_are_not_copies(tmp_path: Path) -> None:
    """Past the hashed head (64 KB), a match is confirmed on the whole file."""
    head = np.random.default_rng(1).bytes(100_000)
    paths = {name: tmp_path / name for name in ("a.png", "b.png", "c.png")}
    paths["a.png"].write_bytes(head)
    paths["b.png"].write_bytes(head[:-1] + b"\x00" if head[-1] else head[:-1] + b"\x01")  # differs at the end
    paths["c.png"].write_bytes(head)

    def sample(name: str, split: str) -> Sample:
        return Sample(path=str(paths[name]), label=0, video=name, method="real", split=split)

    leaks = find_leaks({"train": [sample("a.png", "train")], "val": [sample("b.png", "val")]})
    assert leaks == []
    leaks = find_leaks(
        {"train": [sample("a.png", "train")], "val": [sample("b.png", "val"), sample("c.png", "val")]}
    )
    assert [(x.kind, x.key) for x in leaks] == [("content", f"{paths['a.png']} = {paths['c.png']}")]
