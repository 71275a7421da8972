"""`python -m deepfake.data.convert {folder,ffpp,celebdf,dfdc} ROOT --out manifest.csv`.

Turns a dataset tree into the manifest CSV that `data=manifest` trains on, printing what it found and what
was listed but missing. `--val-fraction` carves a validation split out of train for sets that ship none.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from deepfake.data.layouts import FFPP_METHODS, convert_celebdf, convert_dfdc, convert_ffpp
from deepfake.data.manifest import write_manifest
from deepfake.data.samples import Sample, scan_folder
from deepfake.errors import DataError
from deepfake.exits import run_reporting_errors

KINDS = ("folder", "ffpp", "celebdf", "dfdc")


def convert(
    kind: str,
    root: str | Path,
    *,
    compression: str = "c23",
    methods: Sequence[str] | None = None,
    sources: Sequence[str] = ("youtube",),
    split_dir: str | Path | None = None,
    real_dirs: Sequence[str] = ("real",),
    fake_dirs: Sequence[str] = ("fake",),
    val_fraction: float = 0.0,
) -> tuple[list[Sample], list[str]]:
    """Rows and notes for one dataset tree; the same function the command line calls."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a folder")
    if kind == "folder":
        rows, notes = (
            scan_folder(root, ("train", "val", "test"), real_dirs, fake_dirs, required=("train",)),
            [],
        )
    elif kind == "ffpp":
        rows, notes = convert_ffpp(
            root, compression, methods, sources, Path(split_dir) if split_dir else None
        )
    elif kind == "celebdf":
        rows, notes = convert_celebdf(root)
    elif kind == "dfdc":
        rows, notes = convert_dfdc(root)
    else:
        raise DataError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    if val_fraction:
        rows = carve_val(rows, val_fraction)
    return rows, notes


def carve_val(rows: list[Sample], fraction: float, train: str = "train", val: str = "val") -> list[Sample]:
    """Move a fixed share of train groups (identity, else video) to val; the choice hashes the group name.

    Groups are drawn evenly across strata of the same methods and labels (each stratum ranked by hash, then all
    taken in order of their place within their stratum), so every method, a generator's reals and fakes say,
    keeps about its share in val. Two or more groups give at least one to val: asking for a split gives one.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1 (got {fraction})")
    kinds: dict[str, set[tuple[str, int]]] = {}
    for r in rows:
        if r.split == train:
            kinds.setdefault(r.identity or r.video, set()).add((r.method, r.label))
    strata: dict[tuple[tuple[str, int], ...], list[str]] = {}
    for group, kind in kinds.items():
        strata.setdefault(tuple(sorted(kind)), []).append(group)
    digest = {g: hashlib.sha256(g.encode()).hexdigest() for g in kinds}
    place: dict[str, float] = {}
    for groups in strata.values():
        for i, group in enumerate(sorted(groups, key=digest.__getitem__)):
            place[group] = (i + 0.5) / len(groups)
    ranked = sorted(kinds, key=lambda g: (place[g], digest[g]))
    count = round(fraction * len(ranked))
    chosen = set(ranked[: max(1, count) if len(ranked) > 1 else count])
    return [
        replace(r, split=val) if r.split == train and (r.identity or r.video) in chosen else r for r in rows
    ]


def summary(rows: Sequence[Sample]) -> str:
    fake = sum(r.label for r in rows)
    splits = Counter(r.split or "(none)" for r in rows)
    methods = Counter(r.method for r in rows)
    videos = len({r.video for r in rows})
    return (
        f"{len(rows)} frames ({len(rows) - fake} real, {fake} fake) from {videos} videos; "
        f"splits: {', '.join(f'{k} {v}' for k, v in sorted(splits.items()))}; "
        f"methods: {', '.join(f'{k} {v}' for k, v in sorted(methods.items()))}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deepfake.data.convert",
        description="Write a manifest CSV (path,label,split,video,method,identity) for a dataset tree.",
    )
    p.add_argument("kind", choices=KINDS, help="layout of ROOT")
    p.add_argument("root", help="dataset root folder (frames already extracted)")
    p.add_argument("--out", required=True, help="manifest file to write; paths in it are relative to it")
    p.add_argument("--compression", default="c23", help="ffpp: c0, c23 or c40 (default c23)")
    p.add_argument(
        "--methods",
        nargs="+",
        help=f"ffpp: method folders (default: those of {', '.join(FFPP_METHODS)} present)",
    )
    p.add_argument(
        "--sources", nargs="+", default=["youtube"], help="ffpp: original_sequences sources (default youtube)"
    )
    p.add_argument(
        "--splits",
        dest="split_dir",
        help="ffpp: folder with train/val/test.json (default ROOT/splits or ROOT)",
    )
    p.add_argument("--real-dirs", nargs="+", default=["real"], help="folder: class folders of real faces")
    p.add_argument("--fake-dirs", nargs="+", default=["fake"], help="folder: class folders of fakes")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="move this share of train videos (grouped by identity) to val",
    )
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = {k: v for k, v in vars(args).items() if k not in ("kind", "root", "out")}
    rows, notes = run_reporting_errors(lambda: convert(args.kind, args.root, **options))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    out = write_manifest(rows, args.out)
    print(f"wrote {out}: {summary(rows)}")


if __name__ == "__main__":
    main()
