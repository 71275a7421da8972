"""Dataset verification: structure, counts, unreadable images, image sizes, class balance and split leakage.

These functions report facts and never stop at the first problem, so one pass of the pre-flight check names
every fault; `deepfake.checks.start` judges them (error, warning, info).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from deepfake.data.decode import WIDE_MODES
from deepfake.data.manifest import missing_files, missing_files_message, read_manifest
from deepfake.data.samples import Sample, scan_split
from deepfake.errors import DataError

log = logging.getLogger(__name__)

REQUIRED_SPLITS = ("train", "val")
T = TypeVar("T")
# FaceForensics++ names real videos by identity (`071`) and fakes by target_source (`071_054`); the official
# splits keep each pair in one split, so a shared identity across splits is leakage.
_FFPP_VIDEO = re.compile(r"^(\d{3})(?:_(\d{3}))?$")


@dataclass
class DatasetScan:
    """Samples per split key (train/val/test) and every structural problem met while scanning."""

    root: Path
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def scan_dataset(
    root: Path, splits: Mapping[str, str], real_dirs: Sequence[str], fake_dirs: Sequence[str]
) -> DatasetScan:
    """Scan each split's class folders one by one with the loader's own scanner, collecting its errors."""
    scan = DatasetScan(root)
    for key, dirname in splits.items():
        if not (root / dirname).is_dir():
            if key in REQUIRED_SPLITS:
                scan.problems.append(f"split folder {root / dirname} does not exist (data.splits.{key})")
            continue
        found: list[Sample] = []
        for name in real_dirs:
            found += _scan_class(scan, root, dirname, [name], [])
        for name in fake_dirs:
            found += _scan_class(scan, root, dirname, [], [name])
        scan.samples[key] = found
    return scan


def scan_manifest(path: Path, splits: Mapping[str, str]) -> DatasetScan:
    """A manifest's rows per split key; unreadable rows, missing files and missing splits become problems.

    The rows whose files exist are still returned, so the check goes on to decode and count them.
    """
    scan = DatasetScan(path)
    try:
        rows = read_manifest(path, check_files=False)
    except DataError as e:
        scan.problems.append(str(e))
        return scan
    missing = missing_files(rows)
    if missing:
        scan.problems.append(missing_files_message(path, rows, missing))
    gone = set(missing)
    present = {r.split for r in rows}
    for key, name in splits.items():
        if name in present:
            scan.samples[key] = [r for i, r in enumerate(rows) if r.split == name and i not in gone]
        elif key in REQUIRED_SPLITS:
            found = ", ".join(sorted(s or "(empty)" for s in present))
            scan.problems.append(
                f"manifest {path} has no rows with split={name!r} (data.splits.{key}); splits found: {found}"
            )
    return scan


def _scan_class(scan: DatasetScan, root: Path, split: str, real: list[str], fake: list[str]) -> list[Sample]:
    try:
        return scan_split(root, split, real, fake)
    except DataError as e:
        scan.problems.append(str(e).split(". Expected layout")[0])
        return []


def count_table(samples: Sequence[Sample]) -> dict[str, Counter]:
    """{'real': Counter(method -> images), 'fake': ...}."""
    table: dict[str, Counter] = {"real": Counter(), "fake": Counter()}
    for s in samples:
        table["fake" if s.label else "real"][s.method] += 1
    return table


def pos_weight(samples: Sequence[Sample]) -> float | None:
    """BCE `pos_weight` that balances the classes: real / fake image count (label 1 = fake)."""
    fake = sum(s.label for s in samples)
    return (len(samples) - fake) / fake if fake else None


@dataclass(frozen=True)
class Leak:
    kind: str  # "path", "content", "video" or "identity"
    key: str  # the path, the video id or the identity; for "content", the files that share it (a + b)
    splits: tuple[str, ...]


LEAK_KINDS = ("path", "content", "video", "identity")
HEAD_BYTES = 2**16  # bytes hashed first when looking for copies; larger files are then hashed in full


def identities(video: str) -> tuple[str, ...]:
    """Identities a video shows where its name says so (FF++ `071`, `071_054`); () when unknown."""
    m = _FFPP_VIDEO.match(video.rsplit("/", 1)[-1])
    return tuple(g for g in m.groups() if g) if m else ()


def find_leaks(samples: Mapping[str, Sequence[Sample]]) -> list[Leak]:
    """Files (by path, then by content), video ids and identities present in more than one split.

    Identities come from a row's `identity`, else from FF++ names. Splits are the keys of `samples`.
    """
    files: dict[str, set[str]] = defaultdict(set)
    videos: dict[str, set[str]] = defaultdict(set)
    people: dict[str, set[str]] = defaultdict(set)
    for split, items in samples.items():
        for s in items:  # paths are normalised when read; a symlinked copy is caught by its content
            files[s.path].add(split)
        for video, identity in {(s.video, s.identity) for s in items}:
            videos[video].add(split)
            for person in (identity,) if identity else identities(video):
                people[person].add(split)
    leaks = [Leak("path", k, tuple(sorted(v))) for k, v in sorted(files.items()) if len(v) > 1]
    leaks += _content_leaks(files)
    leaks += [Leak("video", k, tuple(sorted(v))) for k, v in sorted(videos.items()) if len(v) > 1]
    leaks += [Leak("identity", k, tuple(sorted(v))) for k, v in sorted(people.items()) if len(v) > 1]
    return leaks


def _content_leaks(files: Mapping[str, set[str]]) -> list[Leak]:
    """Distinct files with identical bytes in different splits (copies under another name).

    Cheap first: one stat per file; only files whose size also occurs in another split have their first
    `HEAD_BYTES` hashed (all of a typical face crop), and only matches larger than that are hashed in full.
    Files already shared by path are reported as such and skipped here.
    """
    single = {path: next(iter(splits)) for path, splits in files.items() if len(splits) == 1}

    def crossing(paths: list[str], keys: list[Hashable | None]) -> dict[Hashable, list[str]]:
        groups: dict[Hashable, list[str]] = defaultdict(list)
        for path, key in zip(paths, keys, strict=True):
            if key is not None:
                groups[key].append(path)
        return {k: g for k, g in groups.items() if len({single[p] for p in g}) > 1}

    groups = crossing(list(single), _parallel(_size, single))
    for limit in (HEAD_BYTES, None):
        paths = [p for g in groups.values() for p in g]
        groups = crossing(paths, _parallel(functools.partial(_digest, limit=limit), paths))
        if all(size <= HEAD_BYTES for size, _ in groups):
            break  # each head was the whole file
    leaks = []
    for group in groups.values():
        shown = sorted(group, key=lambda p: (single[p], p))
        leaks.append(Leak("content", " = ".join(shown), tuple(sorted({single[p] for p in group}))))
    return sorted(leaks, key=lambda leak: leak.key)


def _parallel(fn: Callable[[str], T], paths: Iterable[str]) -> list[T | None]:
    """Threads: stat and read calls on network drives wait on I/O, not on the CPU."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(fn, paths, chunksize=256))


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:  # a missing file is reported elsewhere
        return None


def _digest(path: str, limit: int | None) -> tuple[int, str] | None:
    """(size, blake2b of the first `limit` bytes, or of all with None)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if limit is None:
                return size, hashlib.file_digest(f, "blake2b").hexdigest()
            return size, hashlib.blake2b(f.read(limit)).hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class ImageIssue:
    path: str
    kind: str  # "zero-byte", "truncated" or "corrupt"
    detail: str


class ImageInfo(NamedTuple):
    width: int
    height: int
    mode: str  # PIL's mode: RGB, L, I;16 (16-bit, scaled to 8 bits when loaded)...


def inspect_image(path: str) -> ImageInfo | ImageIssue:
    """Size and mode after a full decode (truncation only shows when the last bytes are read)."""
    try:
        if os.path.getsize(path) == 0:
            return ImageIssue(path, "zero-byte", "the file is empty")
        with Image.open(path) as im:
            im.load()
            return ImageInfo(*im.size, im.mode)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... all mean "cannot train on it"
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        return ImageIssue(path, kind, f"{type(e).__name__}: {e}")


class _InspectDataset(Dataset):
    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, ImageInfo | ImageIssue]:
        return i, inspect_image(self.paths[i])


def _as_list(batch: list) -> list:
    return batch


@dataclass
class ImageReport:
    issues: list[ImageIssue]
    sizes: np.ndarray  # (n, 2) width, height of the readable images
    seconds: float
    wide: list[str] = field(default_factory=list)  # 16-bit images, scaled to 8 bits when loaded


def inspect_images(paths: Sequence[str], num_workers: int = 0) -> ImageReport:
    """Fully decode every image, in `num_workers` processes (the loader's own worker count)."""
    t0 = time.perf_counter()
    loader = DataLoader(_InspectDataset(paths), batch_size=64, num_workers=num_workers, collate_fn=_as_list)
    issues: list[ImageIssue] = []
    sizes: list[tuple[int, int]] = []
    wide: list[str] = []
    last_note = t0
    for done, batch in enumerate(loader, 1):
        for i, result in batch:
            if isinstance(result, ImageIssue):
                issues.append(result)
                continue
            sizes.append((result.width, result.height))
            if result.mode in WIDE_MODES:
                wide.append(paths[i])
        if time.perf_counter() - last_note > 30:
            last_note = time.perf_counter()
            log.info("verified %d/%d images", min(done * 64, len(paths)), len(paths))
    size_array = np.array(sizes, dtype=np.int64).reshape(-1, 2)
    took = time.perf_counter() - t0
    return ImageReport(sorted(issues, key=lambda x: x.path), size_array, took, sorted(wide))


def size_summary(sizes: np.ndarray) -> str:
    """`width 64-64 (median 64), height 64-64 (median 64)`."""
    if not len(sizes):
        return "no readable images"
    w, h = sizes[:, 0], sizes[:, 1]
    return (
        f"width {w.min()}-{w.max()} (median {int(np.median(w))}), "
        f"height {h.min()}-{h.max()} (median {int(np.median(h))})"
    )
