"""DataModule: turns the `data` config group into samples, datasets and DataLoaders."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from deepfake.data.dataset import EpochSampler, FaceDataset
from deepfake.data.samples import FOLDER_LAYOUT, Sample, scan_split
from deepfake.data.transforms import eval_transform, train_transform
from deepfake.distributed import ShardedSampler
from deepfake.errors import DataError
from deepfake.interrupt import ignore_in_worker

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where generated and decoded data lives; `DEEPFAKE_CACHE` moves it (tests point it at a tmp dir)."""
    return Path(os.environ.get("DEEPFAKE_CACHE", "~/.cache/deepfake")).expanduser()


def default_num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


class DataModule:
    """Builds the train/val/test loaders for one dataset (`kind`: synthetic or folder)."""

    def __init__(
        self,
        kind: str = "synthetic",
        root: str | None = None,
        splits: Mapping[str, str] | None = None,
        real_dirs: Sequence[str] = ("real",),
        fake_dirs: Sequence[str] = ("fake",),
        img_size: int | None = 224,
        num_workers: int = -1,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        augment: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        test_sets: Sequence[str] = (),
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.kind = kind
        self.root = Path(root).expanduser() if root else None
        self.splits = dict(splits or {"train": "train", "val": "val", "test": "test"})
        self.real_dirs = list(real_dirs)
        self.fake_dirs = list(fake_dirs)
        self.img_size = int(img_size or 224)
        self.num_workers = default_num_workers() if num_workers < 0 else num_workers
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.augment = dict(augment or {})
        self.synthetic = dict(synthetic or {})
        self.test_sets = list(test_sets)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.seed = seed
        self.pin_memory = pin_memory
        self.rank = rank  # under DDP the train and val loaders yield this rank's shard
        self.world_size = world_size
        self.samples: dict[str, list[Sample]] = {}
        self.test_samples: dict[str, list[Sample]] = {}

    def setup(self) -> None:
        """Resolve the root (generating the synthetic set once) and scan every split present."""
        root = self.resolve_root()
        for split in ("train", "val"):
            self.samples[split] = scan_split(root, self.splits[split], self.real_dirs, self.fake_dirs)
        if (root / self.splits["test"]).is_dir():
            self.samples["test"] = scan_split(root, self.splits["test"], self.real_dirs, self.fake_dirs)
        for split, samples in self.samples.items():
            fake = sum(s.label for s in samples)
            log.info(
                "data %s: %d images (%d real, %d fake) from %s",
                split,
                len(samples),
                len(samples) - fake,
                fake,
                root,
            )

    def setup_test_sets(self) -> list[str]:
        """Scan what evaluation reports on: each of `test_sets`, else this dataset's test split; returns names.

        A set is named after its folder (made unique), which names its `eval/<set>/` results folder.
        """
        self.test_samples = {}
        if not self.test_sets:
            root = self.resolve_root()
            if not (root / self.splits["test"]).is_dir():
                raise DataError(
                    f"{root} has no '{self.splits['test']}' split to evaluate; "
                    "name the test sets instead: 'data.test_sets=[/path/to/set, ...]'"
                )
            self.test_samples["test"] = scan_split(root, self.splits["test"], self.real_dirs, self.fake_dirs)
        for source in self.test_sets:
            path = Path(source).expanduser()
            base = name = path.name or "test"
            n = 1
            while name in self.test_samples:
                n += 1
                name = f"{base}_{n}"
            self.test_samples[name] = self._scan_test_set(path)
        for name, samples in self.test_samples.items():
            fake = sum(s.label for s in samples)
            log.info(
                "test set %s: %d images (%d real, %d fake)", name, len(samples), len(samples) - fake, fake
            )
        return list(self.test_samples)

    def _scan_test_set(self, path: Path) -> list[Sample]:
        """A dataset root with a test split folder, or a split folder itself (`<path>/{real,fake}/**`)."""
        if not path.is_dir():
            raise DataError(
                f"data.test_sets entry {path} is not a folder; pass a dataset root ({FOLDER_LAYOUT}) "
                "or a folder holding the class folders (<set>/real/..., <set>/fake/...)"
            )
        if (path / self.splits["test"]).is_dir():
            return scan_split(path, self.splits["test"], self.real_dirs, self.fake_dirs)
        return scan_split(path.parent, path.name, self.real_dirs, self.fake_dirs)

    def test_dataloader(self, name: str) -> DataLoader:
        """Loader over one set from `setup_test_sets`, in sample order, with the evaluation transform."""
        ds = FaceDataset(self.test_samples[name], eval_transform(self.img_size), decode_size=self.img_size)
        return self._loader(ds, EpochSampler(len(ds), shuffle=False), self.eval_batch_size, drop_last=False)

    def resolve_root(self) -> Path:
        """The dataset folder; the synthetic set is generated there on first use."""
        if self.kind == "synthetic":
            from deepfake.data.synthetic import generate_synthetic_dataset

            params = {**self.synthetic}
            root = self.root or cache_dir() / f"synthetic-{_digest(params)}"
            return generate_synthetic_dataset(root, **params)
        if self.root is None or not self.root.is_dir():
            raise DataError(
                f"data.root={self.root} does not exist or is not a folder. Expected layout: {FOLDER_LAYOUT}"
            )
        return self.root

    def dataset(self, split: str) -> FaceDataset:
        if split not in self.samples:
            raise DataError(
                f"no '{split}' split under {self.root}; expected a folder named {self.splits.get(split, split)}"
            )
        if split == "train":
            tf = train_transform(self.img_size, **self.augment)
        else:
            tf = eval_transform(self.img_size)
        return FaceDataset(self.samples[split], tf, seed=self.seed, decode_size=self.img_size)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        sampler = self._shard(EpochSampler(len(ds), seed=self.seed, shuffle=True), pad=True)
        return self._loader(ds, sampler, self.batch_size, drop_last=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        sampler = self._shard(EpochSampler(len(ds), shuffle=False), pad=False)
        return self._loader(ds, sampler, self.eval_batch_size, drop_last=False)

    def _shard(self, sampler: EpochSampler, pad: bool) -> EpochSampler | ShardedSampler:
        if self.world_size == 1:
            return sampler
        return ShardedSampler(sampler, self.rank, self.world_size, pad=pad)

    def _loader(
        self, ds: FaceDataset, sampler: EpochSampler | ShardedSampler, batch_size: int, drop_last: bool
    ) -> DataLoader:
        workers = self.num_workers
        # drop_last on a set smaller than one batch would yield no step at all.
        drop_last = drop_last and len(sampler) > batch_size
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            # Own generator: creating an iterator must not draw from the global RNG, which a mid-epoch
            # resume restores; workers ignore Ctrl-C/SIGTERM so the main process can stop gracefully.
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=init_worker,
        )


def init_worker(worker_id: int) -> None:
    """Seed Python and numpy from torch's per-worker seed (derived from the data seed); ignore Ctrl-C/SIGTERM."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    ignore_in_worker(worker_id)


def _digest(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def move_batch(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copy images (still uint8) and labels to the device; non_blocking overlaps with compute when pinned."""
    images, labels, index = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True), index
