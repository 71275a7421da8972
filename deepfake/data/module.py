"""DataModule: turns the `data` config group into manifest rows, datasets and DataLoaders.

Every kind (synthetic, folder, manifest, generators) becomes the same manifest rows first (`deepfake.data.sources`);
splits, method selection, frame caps, SBI, class balance, caches and device decoding then apply to those rows
whatever their origin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from deepfake.data.augment import build_augment
from deepfake.data.balance import cap_frames_per_video, pos_weight, sample_weights
from deepfake.data.cache import build_cache
from deepfake.data.clips import ClipDataset
from deepfake.data.dataset import EpochSampler, FaceDataset, LimitedSampler, ShardedSampler, sbi_groups
from deepfake.data.device_loader import DeviceDecodeLoader, PayloadFiles, collate_payloads
from deepfake.data.loader import SlotLoader
from deepfake.data.methods import by_method, counts, select_splits
from deepfake.data.perturbed import PerturbedCrops
from deepfake.data.samples import Sample
from deepfake.data.settings import DataSettings
from deepfake.data.sources import cache_dir, dataset_root, read_rows, scan_test_set, set_name_of, split_rows
from deepfake.data.transforms import eval_transform
from deepfake.data.workers import init_worker
from deepfake.errors import ConfigError, DataError
from deepfake.perturbations.protocol import Setting

log = logging.getLogger(__name__)


class DataModule(DataSettings):
    """Builds the train/val/test loaders for one dataset (`kind`: synthetic, folder or manifest)."""

    def setup(self) -> None:
        """Read the rows (generating the synthetic set once), split them (carving validation out of train when
        there is none), keep the selected methods, cap frames and plan SBI fakes."""
        self.rows_by_split = split_rows(self.rows(), self.splits, self.val_fraction, self.source_name)
        split = dict(self.rows_by_split)
        fitting = select_splits(
            {k: split[k] for k in ("train", "val")},
            self.train_methods,
            self.train_methods_mode,
            "train_methods",
        )
        split.update(fitting)
        self.samples = {k: cap_frames_per_video(rows, self.frames_per_video) for k, rows in split.items()}
        if self.fake_synthesis == "sbi":
            self._plan_sbi()
        if self.train_methods:
            log.info("data: data.train_methods=%s (%s): the train and val fakes of %s; reals stay",
                     self.train_methods, self.train_methods_mode,
                     "those methods" if self.train_methods_mode == "only" else "every other method")  # fmt: skip
        for name, samples in self.samples.items():
            extra = f" + {len(self.sbi_sources)} SBI fakes" if name == "train" and self.sbi_sources else ""
            log.info(
                "data %s: %s%s from %s; %s",
                name,
                counts(samples),
                extra,
                self.source_name,
                by_method(samples),
            )

    @property
    def source_name(self) -> str:
        return str(self.manifest if self.kind == "manifest" else self.root)

    def rows(self) -> list[Sample]:
        """All manifest rows of the configured source; the folder layout is scanned into the same rows."""
        if self.kind == "manifest" and self.manifest is None:
            raise ConfigError("data.manifest is not set: pass data.manifest=/path/to/manifest.csv")
        root = None if self.kind == "manifest" else self.resolve_root()
        return read_rows(self.kind, root, self.manifest, self.splits, self.real_dirs, self.fake_dirs, self.layout,
                         self.val_fraction)  # fmt: skip

    def resolve_root(self) -> Path:
        """The dataset folder of a folder layout; the synthetic set is generated there on first use."""
        if self.kind == "manifest":
            raise DataError(f"data.kind=manifest reads the rows of {self.manifest}; it has no dataset folder")
        self.root = dataset_root(self.kind, self.root, self.synthetic)
        return self.root

    def setup_test_sets(self) -> list[str]:
        """Scan what evaluation reports on: each of `test_sets`, else this dataset's test split; returns names.

        A set is named after its folder, or its folder and stem (`set_name_of`), made unique; the name
        names its `eval/<set>/` results folder.
        """
        self.test_samples = {}
        self.test_sources: dict[str, str] = {}  # set name -> what it was scanned from (a resolved path)
        if not self.test_sets:
            if self.rows_by_split:  # read by setup(); carving validation never touches the test split
                rows = self.rows_by_split.get("test", [])
            else:
                rows = [r for r in self.rows() if r.split == self.splits["test"]]
            if not rows:
                raise DataError(
                    f"{self.source_name} has no '{self.splits['test']}' split to evaluate; "
                    "name the test sets instead: 'data.test_sets=[/path/to/set, ...]'"
                )
            self.test_samples["test"] = rows
            self.test_sources["test"] = f"{self.source_name}: the {self.splits['test']} split"
        for source in self.test_sets:
            path = Path(source).expanduser()
            base = name = set_name_of(path)
            n = 1
            while name in self.test_samples:
                n += 1
                name = f"{base}_{n}"
            self.test_samples[name] = self._scan_test_set(path)
            self.test_sources[name] = str(path.resolve())
        self.test_samples = select_splits(self.test_samples, self.test_methods, "only", "test_methods")
        if (
            self.test_methods
        ):  # another selection of one folder is other data: its results must not replace these
            chosen = ", ".join(self.test_methods)
            self.test_sources = {n: f"{src} (methods: {chosen})" for n, src in self.test_sources.items()}
        if self.clip_frames > 1:  # one row per video, its first frame: what the clip's prediction stands for
            self.test_frames = dict(self.test_samples)
            self.test_samples = {n: self._clips(f, None).samples for n, f in self.test_frames.items()}
        for name, samples in self.test_samples.items():
            log.info("test set %s: %s; %s", name, counts(samples), by_method(samples))
        return list(self.test_samples)

    def _scan_test_set(self, path: Path) -> list[Sample]:
        """One `data.test_sets` entry's rows (`deepfake.data.sources.scan_test_set`)."""
        return scan_test_set(
            path, self.kind, self.splits["test"], self.real_dirs, self.fake_dirs, self.layout
        )

    def test_dataloader(
        self, name: str, perturb: Setting | None = None, seed: int = 0
    ) -> SlotLoader | DeviceDecodeLoader:
        """Loader over one set from `setup_test_sets`, in sample order, with the evaluation transform; with
        `perturb`, every crop under that robustness setting, seeded by `seed` (`deepfake.data.perturbed`)."""
        ds: FaceDataset | ClipDataset
        rows = self.test_frames[name] if self.clip_frames > 1 else self.test_samples[name]
        size = (
            None if self.geometry == "crop" else self.img_size
        )  # crop: perturbed whole, then centre-cropped
        crops = PerturbedCrops(rows, perturb, seed, size) if perturb is not None else None
        transform = eval_transform(self.img_size, self.geometry)
        if self.clip_frames > 1:
            ds = self._clips(rows, transform, cache=crops)
        else:
            ds = FaceDataset(rows, transform, decode_size=self.decode_size(crops), cache=crops)
        return self._loader(ds, EpochSampler(len(ds), shuffle=False), self.eval_batch_size, drop_last=False)

    def _plan_sbi(self) -> None:
        train = self.samples["train"]
        if self.sbi["real_only"]:
            train = self.samples["train"] = [s for s in train if s.label == 0]
        reals = [i for i, s in enumerate(train) if s.label == 0]
        if not reals:
            raise DataError(
                "data.fake_synthesis=sbi makes fakes from real faces, but the train split has none"
            )
        count = max(1, round(float(self.sbi["ratio"]) * len(reals)))
        self.sbi_sources = [reals[i % len(reals)] for i in range(count)]

    @property
    def pos_weight(self) -> float | None:
        """The fake-class BCE weight for `balance=pos_weight`, else None (the loss is unweighted)."""
        if self.balance != "pos_weight":
            return None
        labels = np.array([s.label for s in self.samples["train"]] + [1] * len(self.sbi_sources))
        return pos_weight(labels)

    def _clips(
        self, frames: list[Sample], transform: Any, cache: Any = None, jitter: bool = False
    ) -> ClipDataset:
        return ClipDataset(frames, self.clip_frames, transform, seed=self.seed, decode_size=self.img_size,
                           cache=cache, jitter=jitter)  # fmt: skip

    def dataset(self, split: str) -> FaceDataset | ClipDataset:
        if split not in self.samples:
            raise DataError(
                f"no '{split}' split in {self.source_name}; rows need split={self.splits.get(split, split)}"
            )
        samples = self.samples[split]
        train = split == "train"
        augment = build_augment(self.img_size, self.augment, self.geometry) if train else None
        if self.geometry == "crop" and not train:
            augment = eval_transform(self.img_size, "crop")
        cache = None
        if self.cache != "none":
            cache = build_cache(samples, self.img_size, self.cache, cache_dir(), self.num_workers)
        if self.clip_frames > 1:
            return self._clips(samples, augment, cache, train)
        return FaceDataset(
            samples,
            augment,
            seed=self.seed,
            decode_size=self.decode_size(cache),
            cache=cache,
            sbi_sources=self.sbi_sources if train else (),
            deferred=self.decode == "gpu",
            masks=self.masks and train,
            align=self.align,
        )

    def decode_size(self, cache: Any = None) -> int | None:
        """The size images are decoded at: the input size, or (`data.geometry=crop`, no cache of resized crops)
        their own, for the transform to crop without resizing."""
        return None if self.geometry == "crop" and cache is None else self.img_size

    def train_dataloader(
        self, limit: float | None = None, fixed: bool = False
    ) -> SlotLoader | DeviceDecodeLoader:
        """The shuffled training loader; `limit` keeps some batches per epoch (see `_limit`), `fixed` the same
        ones every epoch (the debug modes, see LimitedSampler)."""
        ds = self.dataset("train")
        weights = sample_weights(ds.labels) if self.balance == "weighted_sampler" else None
        groups = sbi_groups(len(ds.samples), ds.sbi_sources) if ds.sbi_sources else None
        sampler = EpochSampler(len(ds), seed=self.seed, shuffle=True, weights=weights, groups=groups)
        limited = self._limit(sampler, limit, self.batch_size, fixed)
        return self._loader(ds, self._shard(limited, pad=True), self.batch_size, drop_last=True)

    def eval_dataloader(self, split: str, limit: float | None = None) -> SlotLoader | DeviceDecodeLoader:
        """The split in order; `limit` keeps some batches of evenly spaced samples (the debug modes)."""
        ds = self.dataset(split)
        limited = self._limit(EpochSampler(len(ds), shuffle=False), limit, self.eval_batch_size)
        return self._loader(ds, self._shard(limited, pad=False), self.eval_batch_size, drop_last=False)

    def _limit(
        self, sampler: EpochSampler, limit: float | None, batch_size: int, fixed: bool = False
    ) -> EpochSampler | LimitedSampler:
        """Lightning's `limit_*_batches`: an int is a count of batches per rank, a float a fraction of them."""
        if limit is None:
            return sampler
        per_step = batch_size * self.world_size
        if isinstance(limit, int):
            batches = limit
        else:
            batches = max(1, int(limit * -(-sampler.num_samples // per_step)))
        return LimitedSampler(sampler, batches * per_step, fixed)

    def _shard(
        self, sampler: EpochSampler | LimitedSampler, pad: bool
    ) -> EpochSampler | LimitedSampler | ShardedSampler:
        if self.world_size == 1:
            return sampler
        return ShardedSampler(sampler, self.rank, self.world_size, pad=pad)  # type: ignore[arg-type]

    def _loader(
        self,
        ds: FaceDataset | ClipDataset,
        sampler: EpochSampler | LimitedSampler | ShardedSampler,
        batch_size: int,
        drop_last: bool,
    ) -> SlotLoader | DeviceDecodeLoader:
        workers = self.num_workers
        # drop_last on a set smaller than one batch would yield no step at all.
        drop_last = drop_last and len(sampler) > batch_size
        options: dict[str, Any] = {
            "num_workers": workers,
            "persistent_workers": self.persistent_workers and workers > 0,
            "prefetch_factor": self.prefetch_factor if workers > 0 else None,
            # Own generator: creating an iterator must not draw from the global RNG, which a mid-epoch
            # resume restores; workers ignore Ctrl-C/SIGTERM so the main process can stop gracefully.
            "generator": torch.Generator().manual_seed(self.seed),
            "worker_init_fn": init_worker,
        }
        if not ds.deferred:  # every image is uint8 (3, S, S): the workers (or this process) fill batch slots
            shape = (4 if getattr(ds, "masks", False) else 3, self.img_size, self.img_size)
            shape = (self.clip_frames, *shape) if self.clip_frames > 1 else shape
            return SlotLoader(ds, sampler, batch_size, shape, drop_last=drop_last, pin_memory=self.pin_memory,
                              **options)  # fmt: skip
        # data.decode=gpu: workers ship payloads (JPEG bytes) of different lengths; the GPU decodes each batch.
        loader = DataLoader(
            PayloadFiles(ds),
            batch_size=batch_size,
            sampler=sampler,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
            collate_fn=collate_payloads,
            **options,
        )
        return DeviceDecodeLoader(loader, self.img_size, torch.device("cuda", torch.cuda.current_device()))
