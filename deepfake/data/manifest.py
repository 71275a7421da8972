"""Manifest CSV files: `path,label[,split][,video][,method][,identity][,mask]`, paths relative to the file.

`mask` names a fake's manipulation mask (a grayscale image aligned with its crop: `extract.py dataset=ffpp
masks=true` writes FF++'s), which evaluation's explanations score their heatmaps against.

A manifest is the one on-disk form of a dataset: the converters write it, `data=manifest` reads it, and the
folder layout is scanned into the same rows in memory.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deepfake.data.samples import Sample, scan_folder
from deepfake.errors import DataError
from deepfake.runs.fileio import atomic_write

COLUMNS = ("path", "label", "split", "video", "method", "identity")
MASK = "mask"  # optional: written only when some row has a mask
REQUIRED = ("path", "label")
_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}
_SHOWN = 5  # problems listed by name before "and N more"


def parse_label(value: str) -> int:
    """0/1 or real/fake (any case); anything else is a user error."""
    label = _LABELS.get(value.strip().lower())
    if label is None:
        raise ValueError(f"label {value!r} is not 0, 1, real or fake")
    return label


def read_manifest(path: str | Path, check_files: bool = True) -> list[Sample]:
    """Rows of a manifest with absolute paths; a bad header, label or missing file raises DataError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; write one with `python -m deepfake.data.convert`")
    base = path.parent.resolve()
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        _check_header(path, header)
        reader.fieldnames = header
        rows: list[Sample] = []
        bad: list[str] = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(_row(record, base))
            except ValueError as e:
                bad.append(f"line {line}: {e}")
    if bad:
        raise DataError(f"manifest {path} has {len(bad)} bad row(s): {_listing(bad)}")
    if not rows:
        raise DataError(f"manifest {path} has a header but no rows")
    if check_files:
        missing = missing_files(rows)
        if missing:
            raise DataError(missing_files_message(path, rows, missing))
        masks = [i for i, r in enumerate(rows) if r.mask and not os.path.isfile(r.mask)]
        if masks:
            shown = [f"line {i + 2}: {rows[i].mask}" for i in masks]
            raise DataError(
                f"manifest {path}: {len(masks)} row(s) name missing mask files: {_listing(shown)}. Fix the "
                "mask paths (relative to the manifest's folder) or empty those cells."
            )
    return rows


def missing_files_message(path: Path, rows: Sequence[Sample], missing: Sequence[int]) -> str:
    shown = [f"line {i + 2}: {rows[i].path}" for i in missing]
    return (
        f"manifest {path}: {len(missing)} row(s) point to missing files: {_listing(shown)}. "
        "Fix the paths (they are relative to the manifest's folder) or drop those rows."
    )


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in (*COLUMNS, MASK)]
    if missing or unknown:
        found = ",".join(header) or "(empty file)"
        raise DataError(
            f"manifest {path} has the header {found!r}; expected the columns {','.join(REQUIRED)} and "
            f"optionally {','.join((*COLUMNS[2:], MASK))}"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )


def _row(record: dict[str, str | None], base: Path) -> Sample:
    def get(key: str) -> str:
        return (record.get(key) or "").strip()

    rel = get("path")
    if not rel:
        raise ValueError("empty path")
    label = parse_label(get("label"))
    full = os.path.normpath(base / rel)
    # Without a video column each image is its own video, so no video-level grouping is invented.
    video = get("video") or os.path.splitext(rel)[0]
    mask = get(MASK)
    return Sample(
        path=full,
        label=label,
        video=video,
        method=get("method") or ("fake" if label else "real"),
        split=get("split"),
        identity=get("identity"),
        mask=os.path.normpath(base / mask) if mask else "",
    )


def missing_files(rows: Sequence[Sample]) -> list[int]:
    """Indices of rows whose file is absent; threads, because stat calls on network drives wait, not compute."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        exists = list(pool.map(os.path.isfile, (r.path for r in rows), chunksize=256))
    return [i for i, ok in enumerate(exists) if not ok]


def write_manifest(rows: Iterable[Sample], out: str | Path) -> Path:
    """Write rows atomically with paths relative to the manifest's folder (so the tree can move as a whole)."""
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    masks = any(r.mask for r in rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((*COLUMNS, MASK) if masks else COLUMNS)

    def rel(p: str) -> str:
        return Path(os.path.relpath(p, out.parent)).as_posix()

    for r in rows:
        mask = [rel(r.mask) if r.mask else ""] if masks else []
        writer.writerow([rel(r.path), r.label, r.split, r.video, r.method, r.identity, *mask])
    atomic_write(out, lambda f: f.write(buf.getvalue().encode()))
    return out


def load_rows(
    source: str | Path,
    folders: Sequence[str] = ("train", "val", "test"),
    real_dirs: Sequence[str] = ("real",),
    fake_dirs: Sequence[str] = ("fake",),
) -> list[Sample]:
    """Rows from a manifest file or a folder layout; for callers that accept either (test sets)."""
    source = Path(source).expanduser()
    if source.is_file():
        return read_manifest(source)
    return scan_folder(source, folders, real_dirs, fake_dirs, required=())


def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more
