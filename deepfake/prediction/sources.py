"""What `input=` names, read lazily in a fixed order: one file, a folder, a list file or a manifest CSV.

Every source yields `Entry`s one at a time and can be read again from the start (the run reads it once to count
and once to score), so 100,000 inputs are never one list in memory. The order is deterministic (a folder is
walked in sorted path order, one directory at a time), which is what shards and the merged output rely on.
Relative paths in a list file or a manifest are relative to that file's folder.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake.data.manifest import COLUMNS as MANIFEST_COLUMNS
from deepfake.data.manifest import parse_label
from deepfake.data.samples import IMAGE_EXTENSIONS
from deepfake.errors import UserError
from deepfake.extraction.bounds import not_regular
from deepfake.prediction.inputs import VIDEO_EXTENSIONS

LIST_SUFFIXES = (".txt", ".lst", ".list")
MANIFEST_SUFFIXES = (".csv",)
INPUT_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
#: Manifest columns carried into the output rows when the manifest has them (the label as 0/1).
CARRIED = tuple(c for c in MANIFEST_COLUMNS if c != "path")
_SHOWN = 5


@dataclass(frozen=True)
class Entry:
    """One input: its path (as the output's `path` column writes it) and the manifest's columns for it."""

    path: str
    carried: dict[str, Any] = field(default_factory=dict)
    line: int = 0  # where the source names it (list or manifest line; 0 for files found in a folder)


class InputSource:
    """Entries in a fixed order, readable any number of times; `carried` names the manifest columns its
    entries bring (empty for anything but a manifest)."""

    carried: tuple[str, ...] = ()
    empty_message = "names no images or videos"

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> Iterator[Entry]:
        raise NotImplementedError

    def describe(self) -> str:
        return str(self.path)


class OneFile(InputSource):
    def entries(self) -> Iterator[Entry]:
        yield Entry(str(self.path))


class FolderInputs(InputSource):
    """Images and videos under a folder by extension, walked in sorted path order without following links to
    folders; a link named like an input is kept (a dangling or looping one gets its error row)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.empty_message = f"holds no images or videos ({', '.join(INPUT_EXTENSIONS)})"

    def entries(self) -> Iterator[Entry]:
        yield from (Entry(p) for p in _walk(str(self.path)))


def _walk(folder: str) -> Iterator[str]:
    """Paths under `folder` in the order `sorted()` gives the full path strings: a directory sorts as its name
    plus '/', so its files come exactly where their paths would. Memory: one directory's names at a time."""
    try:
        with os.scandir(folder) as it:
            found = [(e.name + "/" if _is_dir(e) else e.name, e) for e in it]
    except OSError:
        return  # unreadable folder inside the tree: nothing to list there (as rglob)
    for key, entry in sorted(found, key=lambda pair: pair[0]):
        if key.endswith("/"):
            yield from _walk(entry.path)
        elif os.path.splitext(entry.name)[1].lower() in INPUT_EXTENSIONS:
            yield entry.path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


class ListFile(InputSource):
    """One path per line; blank lines and `#` comments are skipped."""

    def entries(self) -> Iterator[Entry]:
        base = self.path.parent
        with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
            for number, raw in enumerate(f, start=1):
                line = raw.strip()
                if line and not line.startswith("#"):
                    p = Path(line).expanduser()
                    yield Entry(str(p if p.is_absolute() else base / p), line=number)


class ManifestInputs(InputSource):
    """A manifest CSV (extract.py's `manifest.csv`, or any `data=manifest` file): its `path` column, and
    label, split, video, method and identity carried into the rows when the file has them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.empty_message = "has a header but no rows"
        header = self._header()
        if "path" not in header:
            raise UserError(
                f"input {path} is a CSV without a `path` column (its header: {','.join(header) or 'none'}); "
                "pass a manifest (path[,label,split,video,method,identity]) or a .txt list of paths"
            )
        self.carried = tuple(c for c in CARRIED if c in header)

    def _header(self) -> list[str]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]

    def entries(self) -> Iterator[Entry]:
        base = self.path.parent
        with open(self.path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
            for number, record in enumerate(reader, start=2):
                rel = (record.get("path") or "").strip()
                if not rel:
                    continue
                carried = {c: (record.get(c) or "").strip() or None for c in self.carried}
                if carried.get("label") is not None:
                    carried["label"] = _label(self.path, number, carried["label"])
                yield Entry(os.path.normpath(base / Path(rel).expanduser()), carried, number)


def _label(path: Path, line: int, value: str) -> int:
    try:
        return parse_label(value)
    except ValueError as e:
        raise UserError(f"manifest {path} line {line}: {e}; fix the label (0, 1, real or fake)") from None


def open_source(source: str | Path) -> InputSource:
    """The source `input=` names, by what it is: a folder, a list file (.txt, .lst, .list), a manifest (.csv),
    or else one image or video."""
    path = Path(source).expanduser()
    if path.is_dir():
        return FolderInputs(path)
    if not path.exists():
        raise UserError(
            f"input {path} does not exist; pass a video, an image, a folder, a list file or a manifest CSV"
        )
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES + MANIFEST_SUFFIXES and (why := not_regular(path)):
        raise UserError(f"input {path}: {why}")  # reading a FIFO would block forever
    if suffix in LIST_SUFFIXES:
        return ListFile(path)
    if suffix in MANIFEST_SUFFIXES:
        return ManifestInputs(path)
    return OneFile(path)  # a FIFO or device here gets its error row, never opened


def list_inputs(source: str | Path) -> list[str]:
    """Every input path of `source`, in order (a list in memory: for small inputs and tests)."""
    found = open_source(source)
    paths = [e.path for e in found.entries()]
    if not paths:
        raise UserError(f"input {found.describe()} {found.empty_message}")
    return paths
