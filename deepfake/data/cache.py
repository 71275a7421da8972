"""Decoded-image caches (`data.cache=ram|disk`): each canonical uint8 crop is decoded once, then only read.

The disk cache is one `.npy` array memory-mapped by every worker and every run that uses the same images
at the same size: its name hashes the ordered image paths and the size, and it is written to a temporary
file and renamed into place, so concurrent runs never see a half-written cache. The RAM cache is the same
array in shared memory, rebuilt by each run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from deepfake.data.decode import decode_file
from deepfake.data.samples import Sample
from deepfake.errors import DataError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class _Decode(Dataset):
    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return decode_file(self.paths[i], self.size).permute(1, 2, 0)


def cache_key(paths: Sequence[str], size: int) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}:{size}\n".encode())
    for p in paths:
        h.update(os.path.abspath(p).encode() + b"\n")
    return h.hexdigest()[:20]


class DecodedCache:
    """Canonical crops at one size, indexed like the samples they came from; picklable for spawned workers."""

    def __init__(self, ram: torch.Tensor | None = None, path: Path | None = None) -> None:
        self.ram = ram  # a shared-memory tensor (N, S, S, 3)
        self.path = path  # or a .npy file, memory-mapped lazily in each process
        self._mapped: np.ndarray | None = None

    def _map(self) -> np.ndarray:
        if self._mapped is None:
            # Copy-on-write: writable without a copy (torch warns on read-only arrays); nothing writes to it.
            self._mapped = np.load(self.path, mmap_mode="c")
        return self._mapped

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.ram is not None:
            return self.ram[i].permute(2, 0, 1)
        return torch.from_numpy(self._map()[i]).permute(2, 0, 1)

    def __len__(self) -> int:
        return int(self.ram.shape[0] if self.ram is not None else self._map().shape[0])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mapped": None}  # a memmap is reopened in each process, never copied


def _fill(out: np.ndarray | torch.Tensor, paths: Sequence[str], size: int, num_workers: int) -> None:
    loader = DataLoader(_Decode(paths, size), batch_size=64, num_workers=num_workers)
    start = 0
    for batch in loader:
        out[start : start + len(batch)] = batch.numpy() if isinstance(out, np.ndarray) else batch
        start += len(batch)


def build_cache(
    samples: Sequence[Sample], size: int, mode: str, root: Path, num_workers: int = 0
) -> DecodedCache:
    """Return the cache of `samples` at `size`, decoding with `num_workers` processes if it is not there."""
    paths = [s.path for s in samples]
    shape = (len(paths), size, size, 3)
    need = int(np.prod(shape))
    t0 = time.perf_counter()
    if mode == "ram":
        free = psutil.virtual_memory().available
        if need > 0.8 * free:
            raise DataError(
                f"data.cache=ram needs {need / 2**30:.1f} GiB for {len(paths)} images at {size}px but only "
                f"{free / 2**30:.1f} GiB of memory is free; use data.cache=disk or a smaller data.img_size"
            )
        array = torch.empty(shape, dtype=torch.uint8).share_memory_()
        _fill(array, paths, size, num_workers)
        log.info("data cache: %d images decoded into RAM in %.1fs", len(paths), time.perf_counter() - t0)
        return DecodedCache(ram=array)
    if mode != "disk":
        raise ValueError(f"unknown cache mode {mode!r}")
    folder = root / "decoded"
    path = folder / f"{cache_key(paths, size)}-{len(paths)}x{size}.npy"
    if path.is_file():
        log.info("data cache: reusing %s", path)
        return DecodedCache(path=path)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free - 2**30:
        raise DataError(
            f"data.cache=disk needs {need / 2**30:.1f} GiB in {folder} but {free / 2**30:.1f} GiB is free; "
            "point DEEPFAKE_CACHE at a larger disk, or use data.cache=none"
        )
    log.info("data cache: decoding %d images (%.2f GiB) into %s", len(paths), need / 2**30, path)
    tmp = folder / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill(out, paths, size, num_workers)
        out.flush()
        del out
        os.replace(tmp, path)  # a concurrent builder of the same key wrote identical bytes; last one wins
    finally:
        tmp.unlink(missing_ok=True)
    log.info("data cache: built in %.1fs", time.perf_counter() - t0)
    return DecodedCache(path=path)
