"""Where a DataModule's rows come from: a source read into manifest rows, its splits (validation carved out of
train when it ships none), and the test sets named by path.

Every kind ends as the same rows: a manifest CSV (`data=manifest`), the folder layout (`folder`, `synthetic`) and
the fully synthetic image layouts (`generators`: `deepfake.data.generators`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepfake.data.convert import carve_val
from deepfake.data.generators import FORENSYNTHS_LAYOUT, GENIMAGE_LAYOUT, detect_layout, generator_rows
from deepfake.data.manifest import read_manifest
from deepfake.data.samples import FOLDER_LAYOUT, Sample, scan_folder, scan_split
from deepfake.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where generated and decoded data lives; `DEEPFAKE_CACHE` moves it (tests point it at a tmp dir)."""
    return Path(os.environ.get("DEEPFAKE_CACHE", "~/.cache/deepfake")).expanduser()


def dataset_root(kind: str, root: Path | None, synthetic: Mapping[str, Any]) -> Path:
    """The dataset folder of a folder or generators layout; the synthetic set is generated on first use, in the
    cache under a name that hashes its parameters unless `root` names a folder."""
    if kind == "synthetic":
        from deepfake.data.synthetic import generate_synthetic_dataset

        params = dict(synthetic)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        root = root or cache_dir() / f"synthetic-{digest}"
        generate_synthetic_dataset(root, **params)
    if root is None:
        raise ConfigError(f"data.root is not set for data.kind={kind}: pass data.root=/path/to/dataset")
    if not root.is_dir():
        layout = f"{GENIMAGE_LAYOUT} or {FORENSYNTHS_LAYOUT}" if kind == "generators" else FOLDER_LAYOUT
        raise DataError(f"data.root={root} does not exist or is not a folder. Expected layout: {layout}")
    return root


def read_rows(
    kind: str,
    root: Path | None,
    manifest: Path | None,
    splits: Mapping[str, str],
    real_dirs: Sequence[str],
    fake_dirs: Sequence[str],
    layout: str = "auto",
    val_fraction: float = 0.0,
) -> list[Sample]:
    """All rows of the configured source; a generators layout's notes are logged. A folder layout needs its
    train and val folders, or only train when validation is carved from it (`val_fraction`)."""
    if kind == "manifest":
        assert manifest is not None  # DataModule.rows asks for it first
        return read_manifest(manifest)
    assert root is not None
    if kind == "generators":
        rows, notes, found = generator_rows(root, layout)
        log.info("data %s: %s layout, %d generators", root, found, len({r.method for r in rows}))
        for note in notes:
            log.info("data: %s", note)
        return rows
    required = [splits["train"]] + ([splits["val"]] if not val_fraction else [])
    return scan_folder(root, list(splits.values()), list(real_dirs), list(fake_dirs), required)


def split_rows(
    rows: Sequence[Sample], splits: Mapping[str, str], val_fraction: float, source: str
) -> dict[str, list[Sample]]:
    """Rows per split key (train, val, test); without a val split, `val_fraction` of train is carved into it."""
    present = {r.split for r in rows}
    val, train = splits["val"], splits["train"]
    if val not in present and val_fraction > 0 and train in present:
        before = sum(r.split == train for r in rows)
        rows = carve_val(list(rows), val_fraction, train=train, val=val)
        moved = sum(r.split == val for r in rows)
        log.info(
            "data: %s has no %r split: data.val_fraction=%g moved %d of its %d train images to validation, "
            "grouped by identity (else video; an image without one is its own) and chosen by a hash of the "
            "group's name, so every run and every method selection gets the same split",
            source, val, val_fraction, moved, before,
        )  # fmt: skip
        present.add(val)
    out = {key: [r for r in rows if r.split == name] for key, name in splits.items() if name in present}
    for key in ("train", "val"):
        if key not in out:
            found = ", ".join(sorted(s or "(empty)" for s in present))
            carve = " or set data.val_fraction=0.1 to carve one from train" if key == "val" else ""
            raise DataError(
                f"the dataset has no {key!r} split (rows with split={splits[key]!r}); splits found: {found}. Map "
                f"data.splits.{key} to one of them{carve}, or add one with "
                "`python -m deepfake.data.convert ... --val-fraction 0.1`"
            )
    return out


def scan_test_set(
    path: Path,
    kind: str,
    test_split: str,
    real_dirs: Sequence[str],
    fake_dirs: Sequence[str],
    layout: str = "auto",
) -> list[Sample]:
    """A manifest CSV (its test rows, or all rows without splits), a dataset root with a test split, a split
    folder itself (`<path>/{real,fake}/**`), or with `data=generators` a GenImage or ForenSynths tree (its test
    split, or all of it when it has no splits)."""
    if path.suffix.lower() == ".csv":
        rows = read_manifest(path)
        test = [r for r in rows if r.split == test_split]
        return test or rows
    if not path.is_dir():
        raise DataError(
            f"data.test_sets entry {path} is not a folder; pass a dataset root ({FOLDER_LAYOUT}) "
            "or a folder holding the class folders (<set>/real/..., <set>/fake/...)"
        )
    if kind == "generators" and (layout != "auto" or detect_layout(path) is not None):
        rows, _, _ = generator_rows(path, layout)
        if any(r.split == test_split for r in rows):
            return [r for r in rows if r.split == test_split]
        if all(not r.split for r in rows):
            return rows
        found = ", ".join(sorted({r.split for r in rows}))
        raise DataError(
            f"data.test_sets entry {path} has no {test_split!r} split (splits: {found}); pass its test folder, "
            f"or a tree laid out as {GENIMAGE_LAYOUT} or {FORENSYNTHS_LAYOUT}"
        )
    if (path / test_split).is_dir():
        return scan_split(path, test_split, list(real_dirs), list(fake_dirs))
    return scan_split(path.parent, path.name, list(real_dirs), list(fake_dirs))


def set_name_of(path: Path) -> str:
    """A test set's name: a manifest's folder and stem (`celebdf_faces/manifest.csv` -> celebdf_faces_manifest:
    every extraction's manifest is called manifest.csv), a split folder with its dataset's name
    (`celebdf/test` -> celebdf_test), any other folder its own name."""
    if path.suffix.lower() == ".csv":
        return f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem
    if path.name in ("train", "val", "test") and path.parent.name:
        return f"{path.parent.name}_{path.name}"
    return path.name or "test"
