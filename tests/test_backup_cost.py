"""The end-of-run backup: checkpoints stored, not deflated; text compressed; restore still verifies it."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from deepfake.runs.backup import ProjectBackup
from deepfake.runs.restore import read_archive


def gzip_members(data: bytes) -> list[int]:
    """Sizes of the decompressed gzip members of `data`, in order."""
    sizes = []
    while data:
        d = zlib.decompressobj(wbits=31)
        sizes.append(len(d.decompress(data)))
        data = d.unused_data
    return sizes


def test_checkpoints_are_stored_uncompressed_and_the_text_compressed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    log_text = "epoch 1/3 | train loss 0.6931 | val auc 0.5000\n" * 20000  # ~1 MB, compresses ~100x
    (run / "train.log").write_text(log_text)
    (run / "metrics.json").write_text(json.dumps({"stop_reason": "done"}))
    weights = bytes(4 * 2**20)  # 4 MB of zeros: level 1 would shrink this to a few KB
    (run / "checkpoints" / "last.pt").write_bytes(weights)
    (run / "checkpoints" / "best.pt").write_bytes(weights[: 2**20])
    archive = ProjectBackup(run, config_yaml="seed: 0\n").create_backup("end", epoch=3, global_step=30)
    assert archive is not None and archive.name.endswith("-end.tar.gz")
    data = archive.read_bytes()
    members = gzip_members(data)
    assert len(members) == 2  # text at level 1, then the checkpoints at level 0
    assert members[1] >= 5 * 2**20  # both checkpoints, in the stored member
    # The checkpoints cost their own size; the 1 MB log costs a small fraction of its size.
    assert 5 * 2**20 < len(data) < 5 * 2**20 + len(log_text) // 10
    with gzip.open(archive) as f:  # one tar stream for any gzip reader
        assert len(f.read()) == sum(members)
    restored = tmp_path / "restored"
    manifest = read_archive(archive, restored)  # verifies each member's sha256 and size
    assert manifest["files"]["checkpoints/last.pt"]["size"] == len(weights)
    assert (restored / "checkpoints" / "last.pt").read_bytes() == weights
    assert (restored / "train.log").read_text() == log_text
