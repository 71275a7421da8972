"""The `data` config group as the DataModule holds it: each setting checked and converted once, and the
combinations that cannot work refused before any row is read (`DataModule` in `deepfake.data.module` extends it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from deepfake.choices import (
    BALANCE,
    CACHES,
    DECODERS,
    FAKE_SYNTHESIS,
    FORMAT_ALIGN,
    GENERATOR_LAYOUTS,
    GEOMETRIES,
)
from deepfake.choices import DATA_KINDS as KINDS
from deepfake.data.samples import Sample
from deepfake.data.transforms import format_aligner
from deepfake.data.workers import resolve_num_workers
from deepfake.errors import ConfigError


def _choice(key: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"data.{key}={value!r} is not one of {', '.join(choices)}")
    return value


def _batch_sizes(batch_size: int, eval_batch_size: int | None, clip_frames: int) -> tuple[int, int]:
    """The train and eval batch sizes in items; they count frames, so B clips of T frames are B*T images."""
    if clip_frames > 1:
        batch_size = max(1, batch_size // clip_frames)
        eval_batch_size = max(1, eval_batch_size // clip_frames) if eval_batch_size else None
    return batch_size, eval_batch_size or 2 * batch_size


def _user_path(path: str | None) -> Path | None:
    return Path(path).expanduser() if path else None


class DataSettings:
    """The DataModule's settings (`conf/data/`), checked; the rows `setup()` fills start empty."""

    def __init__(
        self,
        kind: str = "synthetic",
        root: str | None = None,
        manifest: str | None = None,
        splits: Mapping[str, str] | None = None,
        real_dirs: Sequence[str] = ("real",),
        fake_dirs: Sequence[str] = ("fake",),
        img_size: int | None = 224,
        num_workers: int = -1,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        augment: Mapping[str, Any] | None = None,
        frames_per_video: int | None = None,
        balance: str = "none",
        fake_synthesis: str = "none",
        sbi: Mapping[str, Any] | None = None,
        cache: str = "none",
        decode: str = "cpu",
        synthetic: Mapping[str, Any] | None = None,
        test_sets: Sequence[str] = (),
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
        clip_frames: int = 1,
        masks: bool = False,
        train_methods: Sequence[str] = (),
        train_methods_mode: str = "only",
        test_methods: Sequence[str] = (),
        val_fraction: float = 0.0,
        layout: str = "auto",
        geometry: str = "resize",
        format_align: str = "none",
    ) -> None:
        self.kind = _choice("kind", kind, KINDS)
        self._set_protocol(
            train_methods, train_methods_mode, test_methods, val_fraction, layout, geometry, format_align
        )
        self.root, self.manifest = _user_path(root), _user_path(manifest)
        self.splits = dict(splits or {"train": "train", "val": "val", "test": "test"})
        self.real_dirs, self.fake_dirs = list(real_dirs), list(fake_dirs)
        self.img_size = int(img_size or 224)
        self.augment = dict(augment or {})
        self.frames_per_video = frames_per_video
        self.balance = _choice("balance", balance, BALANCE)
        self.fake_synthesis = _choice("fake_synthesis", fake_synthesis, FAKE_SYNTHESIS)
        self.sbi = {"ratio": 1.0, "real_only": False, **(sbi or {})}
        self.cache = _choice("cache", cache, CACHES)
        self.decode = _choice("decode", decode, DECODERS)
        self.synthetic = dict(synthetic or {})
        self.test_sets = list(test_sets)
        self.masks = masks  # model.mask_head: train batches carry the blend mask as a fourth channel
        self.clip_frames = clip_frames  # > 1: items are videos of this many frames (model.temporal)
        self._empty_rows()
        self._set_loading(num_workers, persistent_workers, prefetch_factor, batch_size, eval_batch_size)
        self._set_placement(seed, pin_memory, rank, world_size)
        self._check_combinations()

    def _empty_rows(self) -> None:
        """The rows `setup()` and `setup_test_sets()` fill: none until then."""
        self.samples: dict[str, list[Sample]] = {}
        self.rows_by_split: dict[str, list[Sample]] = {}  # as read, before selection and caps
        self.test_samples: dict[str, list[Sample]] = {}
        self.sbi_sources: list[int] = []
        self.test_frames: dict[str, list[Sample]] = {}

    def _set_protocol(
        self,
        train_methods: Sequence[str],
        train_methods_mode: str,
        test_methods: Sequence[str],
        val_fraction: float,
        layout: str,
        geometry: str,
        format_align: str,
    ) -> None:
        """docs/protocols.md: which methods train and test, the generators' layout and their crop policy."""
        self.train_methods, self.train_methods_mode = list(train_methods), train_methods_mode
        self.test_methods = list(test_methods)
        self.val_fraction = val_fraction
        self.layout = _choice("layout", layout, GENERATOR_LAYOUTS)
        self.geometry = _choice("geometry", geometry, GEOMETRIES)
        self.align = format_aligner(_choice("format_align", format_align, FORMAT_ALIGN))

    def _set_loading(
        self,
        num_workers: int,
        persistent_workers: bool,
        prefetch_factor: int,
        batch_size: int,
        eval_batch: int | None,
    ) -> None:
        """The loaders' workers and batch sizes (in items: clips for a clip model)."""
        self.num_workers = resolve_num_workers(num_workers)
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.batch_size, self.eval_batch_size = _batch_sizes(batch_size, eval_batch, self.clip_frames)

    def _set_placement(self, seed: int, pin_memory: bool, rank: int, world_size: int) -> None:
        """The loaders' seed, pinned memory, and under DDP this rank's shard of the train and val loaders."""
        self.seed = seed
        self.pin_memory = pin_memory
        self.rank = rank
        self.world_size = world_size

    def _check_combinations(self) -> None:
        """Refuse the settings that are valid one by one but cannot work together (or on this machine)."""
        clip_frames = self.clip_frames
        if clip_frames > 1 and (self.fake_synthesis != "none" or self.decode == "gpu"):
            raise ConfigError(
                f"a clip model (model.frames={clip_frames}) reads whole videos, which data.fake_synthesis="
                f"{self.fake_synthesis} and data.decode={self.decode} do not make: use data.fake_synthesis=none "
                "and data.decode=cpu with it"
            )
        if self.frames_per_video is not None and self.frames_per_video < 1:
            raise ConfigError(f"data.frames_per_video must be >= 1 or null (got {self.frames_per_video})")
        if self.sbi["ratio"] <= 0:
            raise ConfigError(f"data.sbi.ratio must be > 0 (got {self.sbi['ratio']})")
        if self.decode == "gpu" and not torch.cuda.is_available():
            raise ConfigError(
                "data.decode=gpu decodes JPEGs with nvjpeg and needs a CUDA GPU, but none is visible; "
                "use data.decode=cpu (or data.cache=disk to decode only once)"
            )
