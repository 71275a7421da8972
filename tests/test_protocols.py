"""Protocols (docs/protocols.md): method selection, the generator layouts, the crop policy, per-method metrics,
the validation threshold and the cross-method matrix of a sweep, on data and sweep folders the tests write."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, roc_auc_score
from torchvision.transforms.v2 import functional as TF

from deepfake.checks.start import start_checks
from deepfake.config import to_config
from deepfake.data.convert import convert
from deepfake.data.generators import detect_layout, generator_rows
from deepfake.data.manifest import write_manifest
from deepfake.data.module import DataModule
from deepfake.data.samples import Sample
from deepfake.errors import ConfigError, DataError
from deepfake.evaluation.per_method import per_method_metrics
from deepfake.evaluation.threshold import balanced_threshold, reported_threshold
from deepfake.sweeps import summarize
from tests.conftest import write_face


def counts(rows: list[Sample]) -> Counter:
    """(label, method) -> images: what a selection keeps."""
    return Counter(("fake" if r.label else "real", r.method) for r in rows)


def three_method_folder(root: Path) -> Path:
    """`root/{train,val,test}/real/<video>/` and `fake/{A,B,C}/<video>/`, one video of two frames each."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for f in range(2):
            write_face(root / split / "real" / f"{split}_r" / f"{f}.png", 0, rng, 16)
            for method in ("A", "B", "C"):
                write_face(root / split / "fake" / method / f"{split}_{method}" / f"{f}.png", 1, rng, 16)
    return root


@pytest.mark.parametrize("source", ["folder", "manifest"])
def test_method_selection_keeps_the_chosen_fakes_and_every_real(source: str, tmp_path: Path) -> None:
    root = three_method_folder(tmp_path / "data")
    where = {"kind": "folder", "root": str(root)}
    if source == "manifest":  # the converter's manifest: the same rows, methods in its `method` column
        rows, _ = convert("folder", root)
        where = {"kind": "manifest", "manifest": str(write_manifest(rows, tmp_path / "manifest.csv"))}

    dm = DataModule(**where, train_methods=["A"], test_methods=["B", "C"])
    dm.setup()
    for split in ("train", "val"):
        assert counts(dm.samples[split]) == {("real", "real"): 2, ("fake", "A"): 2}, split
    dm.setup_test_sets()
    assert counts(dm.test_samples["test"]) == {("real", "real"): 2, ("fake", "B"): 2, ("fake", "C"): 2}

    leave_out = DataModule(**where, train_methods=["A"], train_methods_mode="all_but")
    leave_out.setup()
    assert counts(leave_out.samples["train"]) == {("real", "real"): 2, ("fake", "B"): 2, ("fake", "C"): 2}
    leave_out.setup_test_sets()
    assert counts(leave_out.test_samples["test"])[("fake", "A")] == 2  # the test split keeps every method

    with pytest.raises(DataError, match=r"names Deepfakes, which no fake image has; .* are: A, B, C"):
        DataModule(**where, train_methods=["Deepfakes"]).setup()
    with pytest.raises(ConfigError, match="leaves no fake method"):
        DataModule(**where, train_methods=["A", "B", "C"], train_methods_mode="all_but").setup()


def test_method_selection_on_a_converted_ffpp_tree(tmp_path: Path) -> None:
    from tests.test_convert import make_ffpp

    rows, _ = convert("ffpp", make_ffpp(tmp_path / "ffpp"))
    manifest = write_manifest(rows, tmp_path / "ffpp.csv")
    dm = DataModule(kind="manifest", manifest=str(manifest), train_methods=["Face2Face"])
    dm.setup()
    assert counts(dm.samples["train"]) == {("real", "youtube"): 6, ("fake", "Face2Face"): 4}
    assert counts(dm.samples["val"]) == {("real", "youtube"): 6, ("fake", "Face2Face"): 4}


def test_start_check_reports_what_the_selection_left(
    tmp_path: Path, compose_cfg: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    root = three_method_folder(tmp_path / "data")
    cfg = to_config(compose_cfg(["data=folder", f"data.root={root}", "data.train_methods=[B]"]))
    dm = DataModule(kind="folder", root=str(root), train_methods=["B"])
    dm.setup()
    with caplog.at_level(logging.INFO, logger="deepfake.checks"):
        start_checks(cfg, dm.samples, batch_size=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("method selection")]
    assert lines == [
        "method selection (only B), train: 4 images (2 real, 2 fake, 50% fake); fakes: B 2; reals: real 2",
        "method selection (only B), val: 4 images (2 real, 2 fake, 50% fake); fakes: B 2; reals: real 2",
    ]


def image(path: Path, size: tuple[int, int], label: int, seed: int) -> None:
    """A PNG of size (height, width); fakes carry a bright grid, like a generator's upsampling."""
    pixels = np.random.default_rng(seed).integers(40, 140, (*size, 3), dtype=np.uint8)
    if label:
        pixels[::2, ::2] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_genimage(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """Three generators as GenImage ships them: one nested a folder deeper (the download's layout), two flat."""
    folders = {"sdv4": "sdv4/imagenet_ai_0419_sdv4", "adm": "adm", "biggan": "biggan"}
    per_class = per_class or {"train": 4, "val": 2}
    seed = 0
    for folder in folders.values():
        for split, n in per_class.items():
            for cls, label in (("ai", 1), ("nature", 0)):
                for i in range(n):
                    seed += 1
                    image(root / folder / split / cls / f"{i:03d}.png", (36 + i, 41), label, seed)
    return root


def make_forensynths(root: Path) -> Path:
    """train/val: progan with classes; test: progan (classes), biggan (none), laion (reals only), ldm (fakes only)."""
    seed = 0
    layout = {
        "train/progan/cat": (2, 2),
        "train/progan/dog": (2, 2),
        "val/progan/cat": (1, 1),
        "test/progan/cat": (2, 2),
        "test/biggan": (2, 2),
        "test/laion": (3, 0),
        "test/ldm": (0, 2),
    }
    for folder, (reals, fakes) in layout.items():
        for cls, label, n in (("0_real", 0, reals), ("1_fake", 1, fakes)):
            for i in range(n):
                seed += 1
                image(root / folder / cls / f"{i}.png", (40, 40), label, seed)
    return root


def test_genimage_layout_reads_generators_splits_and_carves_validation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_genimage(tmp_path / "GenImage")
    assert detect_layout(root) == "genimage"
    rows, notes, layout = generator_rows(root)
    assert layout == "genimage" and "its val is the papers' test set" in notes[0]
    table = Counter((r.method, r.split, r.label) for r in rows)
    for generator in ("sdv4", "adm", "biggan"):  # a nested generator is named by its top folder
        assert [table[(generator, s, y)] for s in ("train", "test") for y in (0, 1)] == [4, 4, 2, 2]
    assert len({r.video for r in rows}) == len(rows)  # every image its own video

    dm = DataModule(kind="generators", root=str(root), val_fraction=0.25, train_methods=["sdv4"])
    with caplog.at_level(logging.INFO):
        dm.setup()
    assert "data.val_fraction=0.25 moved 6 of its 24 train images to validation" in caplog.text
    assert {r.method for split in ("train", "val") for r in dm.samples[split]} == {"sdv4"}  # its reals too
    assert len(dm.samples["train"]) + len(dm.samples["val"]) == 8
    assert not {r.path for r in dm.samples["train"]} & {r.path for r in dm.samples["val"]}
    dm.setup_test_sets()
    assert Counter(r.method for r in dm.test_samples["test"]) == {"sdv4": 4, "adm": 4, "biggan": 4}


def test_forensynths_layout_reads_splits_classes_and_reals_only_folders(tmp_path: Path) -> None:
    root = make_forensynths(tmp_path / "datasets")
    assert detect_layout(root) == "forensynths"
    rows, _, _ = generator_rows(root, "forensynths")
    table = Counter((r.split, r.method, r.label) for r in rows)
    assert table == {
        ("train", "progan", 0): 4, ("train", "progan", 1): 4, ("val", "progan", 0): 1, ("val", "progan", 1): 1,
        ("test", "progan", 0): 2, ("test", "progan", 1): 2, ("test", "biggan", 0): 2, ("test", "biggan", 1): 2,
        ("test", "laion", 0): 3, ("test", "ldm", 1): 2,
    }  # fmt: skip
    # A generators folder without split folders is a test set: every row, unsplit.
    dm = DataModule(kind="generators", root=str(root), test_sets=[str(root / "test")])
    dm.setup()
    assert {s: len(r) for s, r in dm.samples.items()} == {"train": 8, "val": 2, "test": 13}
    dm.setup_test_sets()
    assert Counter(r.method for r in dm.test_samples["datasets_test"]) == {
        "progan": 4,
        "biggan": 4,
        "laion": 3,
        "ldm": 2,
    }
    with pytest.raises(DataError, match=r"neither a GenImage tree .* nor a ForenSynths/UnivFD one"):
        generator_rows(three_method_folder(tmp_path / "faces"))


def test_per_generator_metrics_equal_sklearns_on_the_predictions() -> None:
    rng = np.random.default_rng(3)
    methods = np.array(["sdv4"] * 40 + ["adm"] * 30 + ["laion"] * 20 + ["ldm"] * 10)
    labels = np.array([i % 2 for i in range(70)] + [0] * 20 + [1] * 10)
    probs = np.clip(rng.random(100) * 0.8 + labels * 0.25, 0, 1)
    videos = [f"img{i}" for i in range(100)]
    out = per_method_metrics(labels, probs, methods, videos, threshold=0.5, val_threshold=0.6)
    for name, pool in (
        ("sdv4", methods == "sdv4"),
        ("adm", methods == "adm"),
        ("ldm", np.isin(methods, ["ldm", "laion"])),
    ):
        own = methods == name
        m = out[name]
        assert m["reals"] == ("shared" if name == "ldm" else "own")
        assert m["auc"] == pytest.approx(roc_auc_score(labels[pool], probs[pool]), abs=1e-12)
        assert m["ap"] == pytest.approx(average_precision_score(labels[pool], probs[pool]), abs=1e-12)
        assert m["acc"] == pytest.approx(accuracy_score(labels[own], probs[own] >= 0.5))
        assert m["acc_at_val_threshold"] == pytest.approx(accuracy_score(labels[own], probs[own] >= 0.6))
        assert m["fake_acc"] == pytest.approx(np.mean(probs[own & (labels == 1)] >= 0.5))
        assert (m["n"], m["n_fake"]) == (int(own.sum()), int(labels[own].sum()))
    assert out["laion"]["auc"] is None and out["laion"]["real_acc"] == out["laion"]["acc"]
    assert out["ldm"]["real_acc"] is None
    json.dumps(out, allow_nan=False)  # null, never NaN: any JSON reader takes it


def test_the_validation_threshold_maximises_balanced_accuracy_and_follows_the_temperature() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.3).astype(int)
    probs = np.clip(rng.random(200) * 0.7 + labels * 0.3, 0.001, 0.999)
    t = balanced_threshold(labels, probs)
    best = max(balanced_accuracy_score(labels, probs >= c) for c in np.unique(probs))
    assert balanced_accuracy_score(labels, probs >= t) == pytest.approx(best)
    logits = np.log(probs) - np.log1p(-probs)
    calibrated = 1 / (1 + np.exp(-logits / 2.5))
    moved = reported_threshold(t, 2.5)
    assert np.array_equal(calibrated >= moved - 1e-12, probs >= t)  # the same images on each side
    assert np.isnan(balanced_threshold(np.zeros(5, int), probs[:5]))


def odd_images(root: Path) -> dict[str, tuple[int, int]]:
    sizes = {"wide": (37, 53), "tall": (70, 33), "small": (20, 15)}
    for i, (name, size) in enumerate(sizes.items()):
        for split in ("train", "val"):
            image(root / split / "real" / f"{name}.png", size, 0, i)
            image(root / split / "fake" / f"{name}.png", size, 1, 10 + i)
    return sizes


def test_crop_policy_crops_at_the_input_size_without_resizing(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    odd_images(root)
    dm = DataModule(kind="folder", root=str(root), img_size=32, geometry="crop", num_workers=0)
    dm.setup()
    for split in ("train", "val"):
        ds = dm.dataset(split)
        for i, sample in enumerate(ds.samples):
            original = torch.from_numpy(np.array(Image.open(sample.path))).permute(2, 0, 1)
            h, w = original.shape[-2:]
            # torchvision pads a short side by the missing pixels on both sides, then crops at random
            padded = TF.pad(original, [max(0, 32 - w), max(0, 32 - h)] * 2)
            for epoch in range(3):
                crop = ds[(i, epoch)][0]
                assert crop.shape == (3, 32, 32)
                if split == "val":  # the centre crop, pixel for pixel (zero-padded when smaller)
                    assert torch.equal(crop, TF.center_crop(original, [32, 32]))
                else:  # some 32 x 32 window of the (padded) image, possibly mirrored: never resampled
                    assert window_of(padded, crop) or window_of(padded, crop.flip(-1)), (sample.path, epoch)
    small = next(j for j, s in enumerate(dm.samples["val"]) if "small" in s.path)
    assert int(dm.dataset("val")[(small, 0)][0][:, 0, :].sum()) == 0  # zero rows above a 20 px image


def window_of(image: torch.Tensor, crop: torch.Tensor) -> bool:
    h, w = image.shape[-2:]
    return any(
        torch.equal(image[:, y : y + 32, x : x + 32], crop) for y in range(h - 31) for x in range(w - 31)
    )


def test_format_align_reencodes_reals_and_fakes_alike(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    odd_images(root)
    dm = DataModule(kind="folder", root=str(root), img_size=32, geometry="crop", format_align="jpeg95")
    dm.setup()
    ds = dm.dataset("val")
    for i, sample in enumerate(ds.samples):
        original = torch.from_numpy(np.array(Image.open(sample.path))).permute(2, 0, 1).contiguous()
        assert torch.equal(ds.load(i), TF.jpeg(original, quality=95))
        assert not torch.equal(ds.load(i), original)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.geometry=crop", "data.cache=ram"], "data.geometry=crop reads every image at its own size"),
        (["data.val_fraction=1.5"], r"data.val_fraction must be in \[0, 1\)"),
        (["data.train_methods=[A,A]"], "must name each method once"),
    ],
)
def test_protocol_keys_are_checked(
    overrides: list[str], message: str, compose_cfg: Callable[..., DictConfig]
) -> None:
    with pytest.raises(ConfigError, match=message):
        to_config(compose_cfg(["data=folder", "data.root=/data/x", *overrides]))


def hand_made_job(sweep: Path, name: str, methods: list[str], mode: str, per_method: dict[str, dict]) -> None:
    """What a sweep job leaves: Hydra's config and overrides, metrics.json, eval/test/metrics.json."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create([f"data.train_methods=[{','.join(methods)}]"]), job / ".hydra" / "overrides.yaml"
    )
    cfg = {"data": {"train_methods": methods, "train_methods_mode": mode}, "eval": {"out_dir": None}}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    (job / "metrics.json").write_text(json.dumps({
        "monitor": "val/auc", "mode": "max", "best": {"value": 0.9, "epoch": 1}, "final": {"val/auc": 0.9},
        "stop_reason": "completed", "epochs_completed": 1, "duration_s": 5.0,
    }))  # fmt: skip
    (job / "eval" / "test").mkdir(parents=True)
    (job / "eval" / "test" / "metrics.json").write_text(json.dumps({"per_method": per_method}))


def entry(auc: float, video_auc: float) -> dict:
    return {
        "auc": auc,
        "ap": auc,
        "video_auc": video_auc,
        "n": 10,
        "n_real": 0,
        "n_fake": 10,
        "reals": "shared",
    }


def test_summarize_writes_the_cross_method_matrix_of_a_hand_made_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "multirun" / "2026-12-08" / "10-00-00"
    real = {"n": 20, "n_real": 20, "n_fake": 0, "auc": None, "ap": None, "video_auc": None, "reals": None}
    hand_made_job(
        sweep, "0", ["DF"], "only", {"youtube": real, "DF": entry(0.99, 1.0), "F2F": entry(0.70, 0.8)}
    )
    hand_made_job(
        sweep, "1", ["F2F"], "only", {"youtube": real, "DF": entry(0.60, 0.7), "F2F": entry(0.98, 1.0)}
    )
    hand_made_job(
        sweep, "2", ["F2F"], "only", {"youtube": real, "DF": entry(0.64, 0.5), "F2F": entry(0.96, 1.0)}
    )
    hand_made_job(
        sweep, "3", ["DF"], "all_but", {"youtube": real, "DF": entry(0.55, 0.6), "F2F": entry(0.97, 0.9)}
    )

    assert summarize.main([str(sweep)]) == 0
    with open(sweep / "cross_method.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["train_methods", "DF", "F2F", "mean", "mean_unseen", "jobs", "metric"]
    table = {r[0]: r[1:] for r in rows[1:]}
    assert list(table) == ["DF", "F2F", "all but DF"]  # seeds of one selection share a row
    assert [float(v) for v in table["DF"][:4]] == pytest.approx([0.99, 0.70, 0.845, 0.70])
    assert [float(v) for v in table["F2F"][:4]] == pytest.approx([0.62, 0.97, 0.795, 0.62])  # jobs 1 and 2
    assert table["F2F"][4:] == ["2", "auc"]
    assert [float(v) for v in table["all but DF"][:4]] == pytest.approx([0.55, 0.97, 0.76, 0.55])
    with Image.open(sweep / "cross_method.png") as im:
        assert im.format == "PNG" and min(im.size) >= 200
    out = capsys.readouterr().out
    assert "Cross-method auc" in out and "cross_method.csv" in out

    summarize.main([str(sweep), "--video"])
    with open(sweep / "cross_method.csv", newline="") as f:
        video = {r[0]: r for r in csv.reader(f)}
    assert float(video["DF"][1]) == 1.0 and float(video["F2F"][1]) == pytest.approx(0.6)
    assert video["DF"][-1] == "video_auc"


def test_the_heatmap_boxes_the_methods_each_row_trained_on(tmp_path: Path) -> None:
    from matplotlib.patches import Rectangle

    from deepfake.sweeps.cross_method import build, figure

    sweep = tmp_path / "sweep"
    for job, (methods, mode) in enumerate(((["DF"], "only"), (["F2F"], "only"), (["DF"], "all_but"))):
        hand_made_job(sweep, str(job), methods, mode, {"DF": entry(0.9, 0.9), "F2F": entry(0.8, 0.8)})
    matrix = build(sorted(sweep.iterdir()))
    assert matrix is not None and matrix.seen == [{0}, {1}, {1}]
    boxes = [(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in figure(matrix).axes[0].patches
             if isinstance(p, Rectangle) and not p.get_fill()]  # fmt: skip
    assert sorted(boxes) == [(0, 0), (1, 1), (1, 2)]  # (column, row): the diagonal, and what all-but-DF saw


def test_robustness_settings_perturb_whole_images_then_centre_crop(tmp_path: Path) -> None:
    from deepfake.perturbations.protocol import Setting

    root = tmp_path / "odd"
    odd_images(root)
    dm = DataModule(kind="folder", root=str(root), img_size=32, geometry="crop", num_workers=0,
                    test_sets=[str(root / "val")])  # fmt: skip
    (name,) = dm.setup_test_sets()
    clean = next(iter(dm.test_dataloader(name, Setting("clean", 0))))[0]
    blurred = next(iter(dm.test_dataloader(name, Setting("GB", 5))))[0]
    for i, sample in enumerate(dm.test_samples[name]):
        original = torch.from_numpy(np.array(Image.open(sample.path))).permute(2, 0, 1)
        assert torch.equal(clean[i], TF.center_crop(original, [32, 32]))
    assert blurred.shape == clean.shape and not torch.equal(blurred, clean)
