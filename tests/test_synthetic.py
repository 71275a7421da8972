"""The embedded synthetic dataset: layout, leakage, idempotence, determinism and the SBI construction."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.data.synthetic import FORMAT_VERSION, generate_synthetic_dataset

SMALL = {"train": 4, "val": 2, "test": 3}


def _videos(root: Path, split: str) -> dict[str, list[Path]]:
    return {
        "real": sorted(p for p in (root / split / "real").iterdir() if p.is_dir()),
        "fake": sorted(p for p in (root / split / "fake" / "sbi").iterdir() if p.is_dir()),
    }


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn") / "ds", img_size=32, videos_per_split=SMALL, frames_per_video=3
    )


def test_layout_counts_and_valid_jpegs(small: Path) -> None:
    expected = {"train": (2, 2), "val": (1, 1), "test": (2, 1)}  # (real, fake): the odd video is real
    for split, (n_real, n_fake) in expected.items():
        videos = _videos(small, split)
        assert (len(videos["real"]), len(videos["fake"])) == (n_real, n_fake)
        for video in videos["real"] + videos["fake"]:
            frames = sorted(video.iterdir())
            assert [f.name for f in frames] == ["000.jpg", "001.jpg", "002.jpg"]
            for frame in frames:
                with Image.open(frame) as im:
                    assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))
    assert sum(1 for _ in small.rglob("*.jpg")) == 9 * 3


def test_no_video_or_identity_shared_across_splits(small: Path) -> None:
    identities: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        videos = _videos(small, split)
        names = [v.name for v in videos["real"] + videos["fake"]]
        assert len(names) == len(set(names)), "video ids must be unique within a split"
        # A fake is the self-blend of a real video of the same person: '<identity>_sbi'.
        assert {v.name.removesuffix("_sbi") for v in videos["fake"]} <= {v.name for v in videos["real"]}
        identities[split] = {v.name.removesuffix("_sbi") for v in videos["real"] + videos["fake"]}
    assert not identities["train"] & identities["val"]
    assert not identities["train"] & identities["test"]
    assert not identities["val"] & identities["test"]


def test_marker_written_and_second_call_is_a_no_op(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    kwargs = {"img_size": 32, "videos_per_split": {"train": 2, "val": 2}, "frames_per_video": 2, "seed": 3}
    assert generate_synthetic_dataset(root, **kwargs) == root
    marker = json.loads((root / ".complete").read_text())
    assert marker == {
        "format_version": FORMAT_VERSION,
        "img_size": 32,
        "videos_per_split": {"train": 2, "val": 2},
        "frames_per_video": 2,
        "seed": 3,
        "jpeg_quality": 90,
    }
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert len(before) > 8
    assert generate_synthetic_dataset(root, **kwargs) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "no temporary folders left behind"


def test_other_parameters_regenerate_in_place(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    generate_synthetic_dataset(root, img_size=32, videos_per_split={"train": 2}, frames_per_video=1)
    generate_synthetic_dataset(root, img_size=48, videos_per_split={"train": 2}, frames_per_video=1)
    sizes = {Image.open(p).size for p in root.rglob("*.jpg")}
    assert sizes == {(48, 48)}
    assert json.loads((root / ".complete").read_text())["img_size"] == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_crashed_runs_leftovers_are_swept_but_live_ones_kept(tmp_path: Path) -> None:
    dead, live = tmp_path / ".ds.tmp-1-dead", tmp_path / ".ds.tmp-2-live"
    for d in (dead, live):
        (d / "train").mkdir(parents=True)
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    generate_synthetic_dataset(
        tmp_path / "ds", img_size=32, videos_per_split={"train": 2}, frames_per_video=1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.tmp-2-live", "ds"]


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_synthetic_dataset(tmp_path / "ds", img_size=32, videos_per_split={"train": 2})
    assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"


def test_same_seed_same_pixels_other_seed_other_pixels(tmp_path: Path) -> None:
    kwargs = {"img_size": 32, "videos_per_split": {"train": 2, "val": 2}, "frames_per_video": 2}
    a = _pixels(generate_synthetic_dataset(tmp_path / "a", seed=7, **kwargs))
    b = _pixels(generate_synthetic_dataset(tmp_path / "b", seed=7, **kwargs))
    c = _pixels(generate_synthetic_dataset(tmp_path / "c", seed=8, **kwargs))
    assert a.keys() == b.keys() == c.keys() and len(a) == 8
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert np.abs(a[name].astype(int) - c[name].astype(int)).mean() > 5, name


def test_frames_of_a_video_show_one_person(small: Path) -> None:
    def frame(video: Path, i: int) -> np.ndarray:
        return np.asarray(Image.open(video / f"{i:03d}.jpg"), dtype=np.float64)

    real = _videos(small, "train")["real"]
    within = np.abs(frame(real[0], 0) - frame(real[0], 1)).mean()
    across = np.abs(frame(real[0], 0) - frame(real[1], 0)).mean()
    assert within < 0.5 * across


def test_fake_is_the_real_frame_blended_inside_the_face(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "ds", img_size=64, videos_per_split={"train": 8})
    inner, outer = [], []
    for real in _videos(root, "train")["real"]:
        for i in range(8):
            a = np.asarray(Image.open(real / f"{i:03d}.jpg"), dtype=np.float64)
            b = np.asarray(
                Image.open(root / "train/fake/sbi" / f"{real.name}_sbi" / f"{i:03d}.jpg"), dtype=float
            )
            diff = np.abs(a - b).mean(-1)
            inner.append(diff[24:40, 24:40].mean())
            outer.append(np.concatenate([diff[:4].ravel(), diff[:, :4].ravel(), diff[:, -4:].ravel()]).mean())
    assert min(inner) > 3, "every fake frame must differ from its source inside the face"
    assert np.mean(inner) > 20 * np.mean(outer), "the blend must be confined to the face region"


def test_concurrent_callers_agree(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    kwargs = {"img_size": 32, "videos_per_split": {"train": 4, "val": 2}, "frames_per_video": 2}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            generate_synthetic_dataset(root, **kwargs)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(1 for _ in root.rglob("*.jpg")) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    got, ref = _pixels(root), _pixels(generate_synthetic_dataset(tmp_path.parent / "ref", **kwargs))
    assert got.keys() == ref.keys()
    assert all(np.array_equal(got[k], ref[k]) for k in got)


@pytest.mark.parametrize("bad", [{"train": -1}, {"dev": 2}])
def test_rejects_bad_split_counts(tmp_path: Path, bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path / "ds", videos_per_split=bad)
