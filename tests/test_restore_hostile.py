"""Restore of archives that are not what a backup writes: one `error:` line, nothing written to the target.

Sizes (from the tar headers), the manifest's shape and the free disk space are checked before any member
is extracted, so a refused archive leaves neither the target nor a staging folder behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

import deepfake.runs.restore
from deepfake.errors import UserError
from deepfake.runs.backup import MANIFEST, ProjectBackup
from deepfake.runs.restore import read_archive, restore
from tests.conftest import ROOT, run_cli
from tests.test_backup import fake_run


def archive(path: Path, manifest: Any, members: list[tuple[str, bytes]]) -> Path:
    """A .tar.gz holding `manifest` as MANIFEST.json first, then `members`."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file restore starts to write, in order."""
    written: list[Path] = []
    original = deepfake.runs.restore._copy_hashing

    def spy(source: Any, target: Path | None) -> str:
        if target is not None:
            written.append(target)
        return original(source, target)

    monkeypatch.setattr(deepfake.runs.restore, "_copy_hashing", spy)
    return written


def assert_nothing_left(tmp_path: Path, target: Path) -> None:
    assert not target.exists()
    assert not list(tmp_path.glob(f".{target.name}.restoring-*")), "a staging folder was left behind"


@pytest.mark.cli
def test_a_tar_of_the_run_folder_is_refused_by_name(tmp_path: Path) -> None:
    """`tar czf r.tar.gz -C run .`: its first member is `./` (was an IndexError traceback)."""
    run = fake_run(tmp_path / "run")
    made = tmp_path / "r.tar.gz"
    subprocess.run(["tar", "czf", str(made), "-C", str(run), "."], check=True)
    with tarfile.open(made) as tar:
        assert tar.getnames()[0] in ("./", ".")
    with pytest.raises(UserError, match=f"has no {MANIFEST} first: not a deepfake backup"):
        restore(made, tmp_path / "a")
    assert_nothing_left(tmp_path, tmp_path / "a")
    proc = run_cli(["-m", "deepfake.restore", str(made), "--to", str(tmp_path / "b")], cwd=ROOT, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "not a deepfake backup" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert_nothing_left(tmp_path, tmp_path / "b")


def test_a_backup_repacked_with_dot_slash_names_still_restores(tmp_path: Path) -> None:
    """`./`-prefixed names are the same members: a real backup re-tarred that way restores."""
    run = fake_run(tmp_path / "run")
    original = ProjectBackup(run).create_backup("end")
    manifest = read_archive(original)
    repacked = tmp_path / "dot.tar.gz"
    with tarfile.open(original) as src, tarfile.open(repacked, "w:gz") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            member.name = f"./{member.name}"
            out.addfile(member, io.BytesIO(data))
    restore(repacked, tmp_path / "restored")
    for name in manifest["files"]:
        if not name.startswith("provenance/"):
            assert (tmp_path / "restored" / name).read_bytes() == (run / name).read_bytes(), name


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {"files": {"train.log": "abc"}},
            "the entry for 'train.log' is not a mapping with a sha256 and a size",
        ),
        (
            {"files": {"train.log": {"sha256": "x", "size": "3"}}},
            "the entry for 'train.log' is not a mapping",
        ),
        ({"files": ["train.log"]}, "it has no 'files' mapping"),
        (["train.log"], "it has no 'files' mapping"),
    ],
)
def test_a_malformed_manifest_is_refused(
    tmp_path: Path, writes: list[Path], manifest: Any, message: str
) -> None:
    path = archive(tmp_path / "m.tar.gz", manifest, [("train.log", b"abc")])
    with pytest.raises(UserError, match=f"its {MANIFEST} is malformed") as excinfo:
        restore(path, tmp_path / "a")
    assert message in str(excinfo.value)
    assert writes == []
    assert_nothing_left(tmp_path, tmp_path / "a")


def test_a_member_larger_than_its_manifest_entry_is_refused_before_extracting(
    tmp_path: Path, writes: list[Path]
) -> None:
    small, big = b"fine", b"x" * (1 << 20)
    files = {"train.log": entry(small), "checkpoints/last.pt": {**entry(big), "size": 3}}
    path = archive(
        tmp_path / "big.tar.gz", {"files": files}, [("train.log", small), ("checkpoints/last.pt", big)]
    )
    with pytest.raises(UserError, match=r"checkpoints/last.pt holds 1048576 bytes but its manifest says 3"):
        restore(path, tmp_path / "a")
    assert writes == [], "members were extracted before the sizes were checked"
    assert_nothing_left(tmp_path, tmp_path / "a")


def test_a_member_listed_twice_is_refused(tmp_path: Path, writes: list[Path]) -> None:
    data = b"abc"
    path = archive(tmp_path / "d.tar.gz", {"files": {"train.log": entry(data)}}, [("train.log", data)] * 2)
    with pytest.raises(UserError, match=r"'train\.log': it appears twice"):
        restore(path, tmp_path / "a")
    assert writes == []


def test_an_archive_that_would_not_fit_on_the_disk_is_refused_before_extracting(
    tmp_path: Path, writes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fake_run(tmp_path / "run")
    backup = ProjectBackup(run).create_backup("end")
    total = sum(e["size"] for e in read_archive(backup)["files"].values())
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        deepfake.runs.restore.shutil, "disk_usage", lambda path: usage(10**12, 10**12, total - 1)
    )
    with pytest.raises(UserError, match=r"restoring needs 0\.\d MiB but only 0\.\d MiB are free") as excinfo:
        restore(backup, tmp_path / "a")
    assert "restore to another disk (--to)" in str(excinfo.value)
    assert writes == []
    assert_nothing_left(tmp_path, tmp_path / "a")
    monkeypatch.setattr(deepfake.runs.restore.shutil, "disk_usage", lambda path: usage(10**12, 0, total))
    restore(backup, tmp_path / "b")  # exactly enough is enough
    assert (tmp_path / "b" / "checkpoints" / "last.pt").read_bytes() == (
        run / "checkpoints" / "last.pt"
    ).read_bytes()


@pytest.mark.parametrize("sidecar", ["[1, 2]", "{not json", '{"sha256": 5}'])
def test_a_malformed_mirror_sidecar_falls_back_to_the_archived_last_pt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sidecar: str
) -> None:
    run = fake_run(tmp_path / "run")
    ProjectBackup(run).create_backup("end")
    archived = (run / "checkpoints" / "last.pt").read_bytes()
    (run / "checkpoints" / "last.pt").write_bytes(b"newer, but unverifiable")
    (run / "checkpoints" / "last.pt.json").write_text(sidecar)
    restore(run, tmp_path / "restored")
    assert (tmp_path / "restored" / "checkpoints" / "last.pt").read_bytes() == archived
    assert "using the archived last.pt" in caplog.text
