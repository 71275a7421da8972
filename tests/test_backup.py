"""Backups, the mirror, restore and clean: archives verify, restore refuses tampering, runs resume."""

from __future__ import annotations

import gzip
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import tarfile
import tempfile
import zlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import torch

from deepfake.config import DRIVE_MIRROR, DRIVE_SUBDIR, Config, to_config
from deepfake.errors import ConfigError, UserError
from deepfake.runs.backup import MANIFEST, ProjectBackup
from deepfake.runs.clean import main as clean_main
from deepfake.runs.restore import read_archive, restore
from deepfake.training.runner import train
from tests.conftest import ROOT, make_folder_dataset, run_cli
from tests.runs import make_config, run_dir_of


def fake_run(root: Path, step: int = 5) -> Path:
    """A run directory with the files a backup picks up, without training."""
    rng = random.Random(step)
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "overrides.yaml").write_text("- training.num_epochs=3\n")
    (root / "train.log").write_text("epoch 1/3\n")
    (root / "metrics.json").write_text(json.dumps({"stop_reason": "running", "global_step": step}))
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "last.pt").write_bytes(rng.randbytes(4096))
    (root / "checkpoints" / "best.pt").write_bytes(rng.randbytes(2048))
    (root / "checkpoints" / "epoch_001.pt").write_bytes(rng.randbytes(1024))
    return root


def archive_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        manifest = json.dumps({"format": 1, "files": {}}).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, target: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, target
    return info, data if kind == tarfile.REGTYPE else b""


def test_backup_archive_holds_run_files_checkpoints_and_provenance(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    backup = ProjectBackup(run, config_yaml="seed: 42\n", overrides=["seed=42"], keep_last=2)
    archives = [backup.create_backup("epoch", epoch=i, global_step=5 * i) for i in (1, 2, 3)]
    assert [p.name for p in sorted((run / "backups").glob("*.tar.gz"))] == [a.name for a in archives[1:]]
    manifest = read_archive(archives[-1])
    assert (manifest["reason"], manifest["epoch"], manifest["global_step"]) == ("epoch", 3, 15)
    assert set(manifest["files"]) >= {
        ".hydra/overrides.yaml", "train.log", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt",
        "provenance/config.yaml", "provenance/overrides.yaml", "provenance/pip-freeze.txt", "provenance/git.txt",
    }  # fmt: skip
    assert "checkpoints/epoch_001.pt" not in manifest["files"]  # not selected by backup.include
    with tarfile.open(archives[-1]) as tar:
        assert tar.getnames()[0] == MANIFEST
        freeze = tar.extractfile("provenance/pip-freeze.txt").read().decode()
        git = tar.extractfile("provenance/git.txt").read().decode()
    assert f"torch=={version('torch')}" in freeze.splitlines()
    assert git.startswith(("commit ", "not a git checkout"))


def test_low_disk_space_skips_the_backup_and_keeps_the_older_one(tmp_path: Path, caplog: Any) -> None:
    run = fake_run(tmp_path / "run")
    first = ProjectBackup(run).create_backup("epoch")
    with caplog.at_level(logging.WARNING):
        skipped = ProjectBackup(run, min_free_gb=1e9).create_backup("epoch")
    assert skipped is None and "backup skipped" in caplog.text and "older backup is kept" in caplog.text
    assert list((run / "backups").glob("*.tar.gz")) == [first]


@pytest.mark.slow
@pytest.mark.cli
def test_backup_restore_into_new_folder_and_resume_there(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data")
    train(make_config(tmp_path, data, **{"training.num_epochs": 1, "training.ema.enabled": False}))
    run = run_dir_of(tmp_path)
    (archive,) = (run / "backups").glob("*-end.tar.gz")

    target = tmp_path / "restored"
    proc = run_cli(["-m", "deepfake.restore", str(archive), "--to", str(target)], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"resume with: python train.py resume={target.resolve()}" in proc.stdout
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.json", "hardware.json"):
        assert (target / name).read_bytes() == (run / name).read_bytes(), name
    assert (run / "train.log").read_text().startswith((target / "train.log").read_text())  # logged on after

    train(
        make_config(
            tmp_path, data, resume=str(target), **{"training.num_epochs": 2, "training.ema.enabled": False}
        )
    )
    metrics = json.loads((target / "metrics.json").read_text())
    assert (metrics["stop_reason"], metrics["epochs_completed"]) == ("completed", 2)
    assert (
        json.loads((run / "metrics.json").read_text())["epochs_completed"] == 1
    )  # the original is untouched


def _content_changing_flip(blob: bytes, start: int) -> int:
    """The first byte from `start` whose low bit, flipped, changes what the gzip stream holds.

    Some deflate bits (Huffman-table slack, block padding) change nothing; flipping one is no tampering.
    """
    raw = gzip.decompress(blob)
    for i in range(start, len(blob)):
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        try:
            if gzip.decompress(bytes(flipped)) != raw:
                return i
        except (OSError, EOFError, zlib.error):
            return i
    raise AssertionError("no byte changes the archive")


@pytest.mark.cli
def test_restore_refuses_tampered_and_escaping_archives(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    archive = ProjectBackup(run).create_backup("end")
    blob = bytearray(archive.read_bytes())
    blob[_content_changing_flip(bytes(blob), len(blob) // 2)] ^= 0x01
    tampered = tmp_path / "tampered.tar.gz"
    tampered.write_bytes(bytes(blob))
    with pytest.raises(UserError, match=r"damaged|altered"):
        restore(tampered, tmp_path / "a")
    (tmp_path / "tampered.tar.gz.sha256").write_text(archive.with_name(archive.name + ".sha256").read_text())
    with pytest.raises(UserError, match="does not match its checksum"):
        restore(tampered, tmp_path / "a")
    assert not (tmp_path / "a").exists()

    escaping = {
        "climbs out": member("../evil.txt"),
        "absolute": member("/tmp/evil.txt"),
        "symlink": member("checkpoints/last.pt", kind=tarfile.SYMTYPE, target="/etc/passwd"),
        "hardlink": member("link", kind=tarfile.LNKTYPE, target="../evil.txt"),
    }
    for why, bad in escaping.items():
        path = archive_with(tmp_path / f"{why}.tar.gz", [bad])
        with pytest.raises(UserError, match="refusing archive member"):
            restore(path, tmp_path / "b")
    assert not (tmp_path / "b").exists() and not (tmp_path / "evil.txt").exists()
    proc = run_cli(
        ["-m", "deepfake.restore", str(tmp_path / "climbs out.tar.gz"), "--to", str(tmp_path / "c")], ROOT
    )
    assert proc.returncode == 2 and "refusing archive member '../evil.txt'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_mirror_warns_then_catches_up_and_restores(tmp_path: Path, caplog: Any) -> None:
    run = fake_run(tmp_path / "base" / "outputs" / "day" / "run")
    mirror = tmp_path / "drive"
    backup = ProjectBackup(run, mirror=str(mirror), mirror_subdir="proj", base_path=tmp_path / "base")
    with caplog.at_level(logging.WARNING):
        backup.checkpoint_saved(run / "checkpoints" / "last.pt", {"epoch": 1, "global_step": 5})
        first = backup.create_backup("epoch", epoch=1, global_step=5)
    assert "does not exist or is not mounted" in caplog.text and first.is_file()

    mirror.mkdir()  # "mounted" again: the next backup copies everything still missing
    (run / "checkpoints" / "last.pt").write_bytes(b"newer weights")
    backup.checkpoint_saved(run / "checkpoints" / "last.pt", {"epoch": 2, "global_step": 10})
    second = backup.create_backup("epoch", epoch=1, global_step=5)
    copy = mirror / "proj" / "outputs" / "day" / "run"
    assert sorted(p.name for p in (copy / "backups").iterdir()) == sorted(
        [first.name, first.name + ".sha256", second.name, second.name + ".sha256"]
    )
    assert (copy / "checkpoints" / "last.pt").read_bytes() == b"newer weights"
    assert json.loads((copy / "checkpoints" / "last.pt.json").read_text())["global_step"] == 10

    restored = restore(copy, tmp_path / "restored")  # the mirror's last.pt is further along than the archive
    assert (restored / "checkpoints" / "last.pt").read_bytes() == b"newer weights"
    assert (restored / "checkpoints" / "best.pt").read_bytes() == (
        run / "checkpoints" / "best.pt"
    ).read_bytes()


def test_drive_preset_from_cli_and_python(compose_cfg: Any, tmp_path: Path, caplog: Any) -> None:
    composed = compose_cfg(["backup=drive"]).backup
    python = to_config(Config(use_drive=True)).backup
    assert (composed.mirror, composed.mirror_subdir) == (python.mirror, python.mirror_subdir)
    assert (python.mirror, python.mirror_subdir) == (DRIVE_MIRROR, DRIVE_SUBDIR)
    conflicting = Config(use_drive=True)
    conflicting.backup.mirror = "/elsewhere"
    with pytest.raises(ConfigError, match="use_drive=true mirrors to"):
        to_config(conflicting)
    if not Path(DRIVE_MIRROR).exists():
        with caplog.at_level(logging.WARNING):
            ProjectBackup(fake_run(tmp_path / "run"), mirror=python.mirror).create_backup()
        assert "drive.mount('/content/drive')" in caplog.text


def _train_as_nobody(config: Any, said: Path) -> None:
    """Root ignores file modes: drop to an unprivileged user so the read-only mirror really is read-only."""
    torch.set_num_threads(1)
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    try:
        train(config)
    except UserError as e:
        said.write_text(str(e))
        os._exit(2)


@pytest.mark.slow
def test_a_read_only_mirror_is_refused_before_training(request: pytest.FixtureRequest) -> None:
    """A mirror that cannot take a copy is found at the start, not at the first backup (a lost Drive later in
    the run only warns: test_missing_mirror_warns_then_catches_up_and_restores)."""
    base = Path(tempfile.mkdtemp(prefix="deepfake-ro-"))  # reachable by the unprivileged user
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o777)
    data = make_folder_dataset(base / "data")
    mirror = base / "mirror"
    mirror.mkdir(mode=0o555)
    mirror.chmod(0o555)
    config = make_config(
        base, data, **{"training.num_epochs": 1, "backup.mirror": str(mirror), "training.ema.enabled": False}
    )
    said = base / "said.txt"
    child = multiprocessing.get_context("fork").Process(target=_train_as_nobody, args=(config, said))
    child.start()
    child.join(300)
    assert child.exitcode == 2
    assert said.read_text() == (
        f"backup.mirror {mirror} is not writable (Permission denied); make it writable, or point backup.mirror "
        "at a writable folder"
    )
    assert not list((base / "outputs").glob("*/*/metrics.json")) and list(mirror.iterdir()) == []


def test_clean_is_a_dry_run_until_yes(tmp_path: Path, capsys: Any) -> None:
    done = fake_run(tmp_path / "outputs" / "d" / "done")
    (done / "metrics.json").write_text(json.dumps({"stop_reason": "completed"}))
    backup = ProjectBackup(done)
    old, new = backup.create_backup(), backup.create_backup()
    going = fake_run(tmp_path / "outputs" / "d" / "going")
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())

    clean_main([str(tmp_path / "outputs")])
    out = capsys.readouterr().out
    assert f"would remove {old}" in out and "pass --yes to delete" in out
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before

    clean_main([str(tmp_path / "outputs"), "--yes"])
    assert sorted(p.name for p in (done / "checkpoints").iterdir()) == ["best.pt"]
    assert sorted(p.name for p in (done / "backups").iterdir()) == [new.name, new.name + ".sha256"]
    assert sorted(p.name for p in (going / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # unfinished
    with pytest.raises(SystemExit) as exit_info:
        clean_main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2


def test_a_checkpoint_rewritten_after_a_backup_makes_it_stale(tmp_path: Path) -> None:
    """The exit backup is skipped only when the newest one holds the final step and today's checkpoints."""
    run = fake_run(tmp_path / "run")
    backup = ProjectBackup(run)
    assert backup.stale(5)  # nothing archived yet
    backup.create_backup("epoch", epoch=1, global_step=5)
    assert not backup.stale(5) and backup.stale(6)
    (run / "train.log").write_text("epoch 1/3\nmore\n")  # logs grow after every backup: not a reason
    assert not backup.stale(5)
    best = run / "checkpoints" / "best.pt"
    torch.save({"calibration": {"temperature": 2.0}}, best.with_name(".best.tmp"))
    best.with_name(".best.tmp").replace(best)  # as save_checkpoint writes it: atomically replaced
    assert backup.stale(5)
    backup.create_backup("end", epoch=1, global_step=5)
    assert not backup.stale(5)
