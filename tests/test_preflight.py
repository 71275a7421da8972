"""The pre-flight check (`python train.py check=true`) and the cheap checks every training run starts with."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from deepfake.checks.start import config_findings, dataset_findings
from deepfake.data.manifest import write_manifest
from deepfake.data.samples import Sample, scan_folder
from deepfake.data.verify import find_leaks, identities, inspect_image
from deepfake.errors import DataError
from tests.conftest import FAST, ROOT, make_folder_dataset, run_cli

CHECK = ["check=true", "data=folder", *FAST]


def run_check(tmp_path: Path, *overrides: str) -> tuple[int, str]:
    """`python train.py check=true ...` from `tmp_path`; its exit code and both streams."""
    proc = run_cli([str(ROOT / "train.py"), *overrides, f"base_path={tmp_path}"], cwd=tmp_path, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def plant_problems(root: Path) -> dict[str, Path]:
    """One of each fault the check must name: corrupt, zero-byte and truncated images, an empty class
    folder, and one video present in both train and val."""
    corrupt = root / "train" / "real" / "train_r001" / "0000.jpg"
    corrupt.write_bytes(b"<html><body>404 Not Found</body></html>")  # a failed download saved as .jpg
    zero = root / "train" / "fake" / "FaceSwap" / "train_f000" / "0001.png"
    zero.write_bytes(b"")
    truncated = root / "val" / "real" / "val_r002" / "0000.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    empty = root / "test" / "fake"
    shutil.rmtree(empty)
    empty.mkdir()
    leaked = root / "val" / "real" / "train_r003"
    shutil.copytree(root / "train" / "real" / "train_r003", leaked)
    return {"corrupt": corrupt, "zero": zero, "truncated": truncated, "empty": empty}


@pytest.mark.cli
def test_check_names_every_planted_problem_and_exits_1(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data")
    planted = plant_problems(root)
    code, out = run_check(tmp_path, *CHECK, f"data.root={root}")
    assert code == 1, out[-3000:]
    assert "Traceback" not in out
    assert f"ERROR: corrupt image {planted['corrupt']}" in out
    assert f"ERROR: zero-byte image {planted['zero']}: the file is empty" in out
    assert f"ERROR: truncated image {planted['truncated']}" in out
    assert f"ERROR: class folder {planted['empty']} holds no images" in out
    assert "ERROR: leakage: 1 video id(s) appear in more than one split: real/train_r003 (train+val)" in out
    # The copied folder's frames are also byte-identical files in two splits.
    assert "ERROR: leakage: 3 set(s) of identical files (same bytes under different names)" in out
    assert "[loading] skipped: fix the dataset errors above first" in out
    assert "verdict: FAIL, 6 error(s)" in out
    assert out.rstrip().splitlines()[-1].endswith("fix the errors above, then rerun")


@pytest.mark.cli
def test_check_passes_on_a_clean_dataset_and_exits_0(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "data")
    code, out = run_check(tmp_path, *CHECK, f"data.root={root}")
    assert code == 0, out[-3000:]
    assert (
        "[dataset] train: 24 images, 8 videos | real 12 (real: 12) | fake 12 (Deepfakes: 6, FaceSwap: 6)"
        in out
    )
    assert "decoded all 72 images" in out and "width 32-32 (median 32)" in out
    assert "pos_weight=1 (real/fake)" in out
    assert (
        "[config] effective batch 8 (8 x 1 accumulation x 1 process(es)); 3 optimizer steps per epoch" in out
    )
    assert "[loading] training loader: " in out and "[loading] decode-only ceiling: " in out
    assert "[step] one step on a real batch of 8 at 32px" in out
    assert "verdict: OK" in out and "ERROR" not in out
    assert not list((tmp_path / "outputs").glob("*/*/checkpoints"))  # nothing was trained


@pytest.mark.cli
def test_check_verifies_a_manifests_rows(tmp_path: Path) -> None:
    """data=manifest gets the same check: missing files and corrupt images named, identity leakage from the
    manifest's identity column, and the rows that exist still counted and decoded."""
    root = make_folder_dataset(tmp_path / "data")
    rows = scan_folder(root, ["train", "val", "test"], ["real"], ["fake"], required=["train", "val"])
    rows = [
        replace(r, identity="007") if r.video in ("real/train_r000", "real/val_r001") else r for r in rows
    ]
    gone = replace(rows[0], path=str(root / "train" / "real" / "gone.jpg"))
    manifest = write_manifest([*rows, gone], tmp_path / "manifest.csv")
    corrupt = Path(rows[5].path)
    corrupt.write_bytes(b"not an image")
    code, out = run_check(tmp_path, "check=true", "data=manifest", f"data.manifest={manifest}", *FAST)
    assert code == 1, out[-3000:]
    assert "Traceback" not in out
    assert f"[dataset] manifest {manifest}" in out
    assert (
        f"ERROR: manifest {manifest}: 1 row(s) point to missing files: line {len(rows) + 2}: {gone.path}"
        in out
    )
    assert f"ERROR: corrupt image {corrupt}" in out
    assert "ERROR: leakage: 1 identity id(s) appear in more than one split: 007 (train+val)" in out
    assert "[dataset] train: 24 images, 8 videos" in out and "decoded all 72 images" in out
    assert "verdict: FAIL, 3 error(s)" in out


def _leaky_dataset(root: Path) -> Path:
    """A folder dataset whose val split holds a copy of a training video."""
    make_folder_dataset(root, videos=2, frames=1)
    shutil.copytree(
        root / "train" / "fake" / "FaceSwap" / "train_f000", root / "val" / "fake" / "FaceSwap" / "train_f000"
    )
    return root


def test_training_stops_before_the_first_epoch_on_leakage(compose_cfg, tmp_path: Path) -> None:
    from train import train

    root = _leaky_dataset(tmp_path / "data")
    cfg = compose_cfg([*FAST, "data=folder", f"data.root={root}", f"base_path={tmp_path}"])
    with pytest.raises(
        DataError,
        match=r"leakage: 1 video id\(s\).*fake/FaceSwap/train_f000 \(train\+val\).*check_on_start=false",
    ):
        train(cfg)
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))


@pytest.mark.slow
def test_check_on_start_false_trains_past_the_leakage(compose_cfg, tmp_path: Path) -> None:
    """The user's explicit way past the leakage stop: the same dataset then trains (an end-to-end run)."""
    from train import train

    root = _leaky_dataset(tmp_path / "data")
    overrides = [*FAST, "data=folder", f"data.root={root}", f"base_path={tmp_path}", "training.num_epochs=1"]
    value = train(compose_cfg([*overrides, "check_on_start=false"]))
    assert 0.0 <= value <= 1.0
    assert len(list(tmp_path.glob("outputs/*/*/checkpoints/last.pt"))) == 1


def test_identity_leakage_follows_ffpp_names() -> None:
    assert identities("fake/Deepfakes/071_054") == ("071", "054")
    assert identities("real/071") == ("071",)
    assert identities("real/train_r000") == ()

    def s(video: str, label: int) -> Sample:
        return Sample(path=f"{video}/0.png", label=label, video=video, method="m")

    samples = {
        "train": [s("real/071", 0), s("fake/Deepfakes/071_054", 1)],
        "val": [s("fake/Face2Face/054_071", 1)],
    }
    leaks = find_leaks(samples)
    assert [(x.kind, x.key, x.splits) for x in leaks] == [
        ("identity", "054", ("train", "val")),
        ("identity", "071", ("train", "val")),
    ]
    errors = [f.text for f in dataset_findings(samples) if f.level == "error"]
    assert any(t.startswith("leakage: 2 identity id(s)") for t in errors)
    assert any("the val split has no real images" in t for t in errors)


def test_config_findings_flag_long_warmup_and_bad_monitor(compose_cfg) -> None:
    cfg = compose_cfg(["training.num_epochs=1", "training.batch_size=8", "training.monitor=val/f1"])
    findings = config_findings(cfg, num_train=80)
    by_level = {lvl: [f.text for f in findings if f.level == lvl] for lvl in ("info", "warning", "error")}
    assert by_level["info"][0].startswith(
        "effective batch 8 (8 x 1 accumulation x 1 process(es)); 10 optimizer"
    )
    assert any(
        t.startswith(
            "warmup (10 steps, training.scheduler.warmup_epochs) is as long as the whole training (10 steps)"
        )
        for t in by_level["warning"]
    )
    assert by_level["error"] == [
        "training.monitor=val/f1 is not a validation metric; use one of val/auc, val/acc, val/eer, val/ap, "
        "val/loss, val/video_auc, val/video_acc, val/video_eer"
    ]
    cfg = compose_cfg(["training.monitor=val/eer", "training.monitor_mode=max"])
    texts = [f.text for f in config_findings(cfg, num_train=800)]
    assert any("val/eer is better when lower, but its mode is max" in t for t in texts)


def test_inspect_image_classifies_failures(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", videos=1, frames=1)
    good = next(root.rglob("*.jpg"))
    assert inspect_image(str(good)) == (32, 32, "RGB")
    empty = tmp_path / "empty.png"
    empty.touch()
    assert inspect_image(str(empty)).kind == "zero-byte"
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:-60])
    assert inspect_image(str(cut)).kind == "truncated"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"hello")
    issue = inspect_image(str(junk))
    assert issue.kind == "corrupt" and "cannot identify image file" in issue.detail
