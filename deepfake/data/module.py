"""DataModule: turns the `data` config group into samples, datasets and DataLoaders."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from deepfake.data.dataset import EpochSampler, FaceDataset
from deepfake.data.samples import FOLDER_LAYOUT, Sample, scan_split
from deepfake.data.transforms import eval_transform, train_transform
from deepfake.errors import DataError

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
        self.samples: dict[str, list[Sample]] = {}

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
        return self._loader(
            ds, EpochSampler(len(ds), seed=self.seed, shuffle=True), self.batch_size, drop_last=True
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        return self._loader(ds, EpochSampler(len(ds), shuffle=False), self.eval_batch_size, drop_last=False)

    def _loader(self, ds: FaceDataset, sampler: EpochSampler, batch_size: int, drop_last: bool) -> DataLoader:
        workers = self.num_workers
        # drop_last on a set smaller than one batch would yield no step at all.
        drop_last = drop_last and len(ds) > batch_size
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
        )


def _digest(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def move_batch(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copy images (still uint8) and labels to the device; non_blocking overlaps with compute when pinned."""
    images, labels, index = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True), index
