"""Loaders that wrap a DataLoader, and the shared-memory slot loader the CPU paths use with workers.

PyTorch's default path collates every batch in a worker into a fresh shared-memory segment, which both
the worker and the main process then page-fault through: about 100 us per 224 px image on a 2-core VM,
as much as augmenting the image. `SlotLoader` instead hands each task a slot, a shared uint8 batch buffer
the main process owns and reuses; the worker writes its images there and only labels and indices travel
back. A slot is handed out again only once no tensor the loader yielded still uses it, so a batch stays
valid for as long as the caller keeps it, as a DataLoader's does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from deepfake.errors import ConfigError, UserError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private; absent, yielded slots are copied
#: The slot number of a task whose worker met a UserError: the error travels back in the images' place.
FAILED = -2


def shut_down(loader: DataLoader) -> None:
    """Stop a DataLoader's persistent workers now and drop its iterator (Lightning does the same in
    `_shutdown_workers_and_reset_iterator`).

    The workers ignore SIGTERM (`system.interrupt.ignore_in_worker`), so multiprocessing's exit handler, which
    terminates its children and then joins them, waits forever on the workers of a loader still alive at
    exit: after a worker's error (the loader is kept by the objects the traceback holds) or at the end of a
    sweep job whose process lives on (joblib's loky workers).
    """
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


class WrappedLoader:
    """What the training loop uses of a DataLoader (`dataset`, `sampler`, `batch_size`, `len`), forwarded.

    `sampler` is the per-sample sampler whatever the wrapped loader iterates, so `set_epoch` (and a
    mid-epoch resume's start position) works the same on every loader the DataModule returns.
    """

    def __init__(self, loader: DataLoader, dataset: Any, sampler: Any, batch_size: int) -> None:
        self.loader = loader
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Shut the workers down; the next iteration starts new ones."""
        shut_down(self.loader)


class SlotPool:
    """Fixed shared-memory batch buffers; a slot is free when it is neither being filled nor still in use."""

    def __init__(self, count: int, shape: Sequence[int]) -> None:
        self.count, self.shape = count, tuple(shape)
        self.slots: list[torch.Tensor] = []
        self.filling: set[int] = set()
        self.baseline = 0

    def allocate(self) -> None:
        if self.slots:
            return
        need = self.count * torch.Size(self.shape).numel()
        try:
            free = shutil.disk_usage("/dev/shm").free
        except OSError:  # no /dev/shm (macOS): shared memory is not a separate, size-capped mount
            free = None
        available = psutil.virtual_memory().available
        if need > available:  # e.g. a clip model's clips: model.frames x 3 x img_size^2 bytes per item
            raise ConfigError(
                f"the data loader needs {need / 2**30:.1f} GiB of memory for {self.count} batches of "
                f"{self.shape[0]} items of shape {tuple(self.shape[1:])} but {available / 2**30:.1f} GiB are "
                "available; lower training.batch_size, data.img_size or model.frames (clip models), or "
                "data.num_workers and data.prefetch_factor"
            )
        if free is not None and need > free:
            raise ConfigError(
                f"the data loader needs {need / 2**20:.0f} MiB of shared memory for {self.count} batches of "
                f"{self.shape[0]} images but /dev/shm has {free / 2**20:.0f} MiB free; lower "
                "data.prefetch_factor, data.num_workers or training.batch_size, or give the container more "
                "(docker run --shm-size=2g)"
            )
        # In place: the SlotWriter given to the DataLoader already holds this list.
        # Channels-last, the layout the resize and the cache produce, so filling a slot is a plain copy.
        layout = torch.channels_last if len(self.shape) == 4 else torch.contiguous_format
        self.slots.extend(
            torch.empty(self.shape, dtype=torch.uint8).contiguous(memory_format=layout).share_memory_()
            for _ in range(self.count)
        )
        self.baseline = _count(self.slots[0])

    def acquire(self) -> int:
        """A free slot's number, or -1 when every slot is busy (the task then takes PyTorch's own path)."""
        for i, slot in enumerate(self.slots):
            if i not in self.filling and (_use_count is None or _count(slot) == self.baseline):
                self.filling.add(i)
                return i
        return -1

    def reclaim(self) -> None:
        """Free the slots of an abandoned epoch; only safe once no worker can still be writing them."""
        self.filling.clear()


def _count(t: torch.Tensor) -> int:
    return _use_count(t.untyped_storage()._cdata)  # type: ignore[misc]


class SlotSampler(Sampler[tuple[int, list[Any]]]):
    """Groups the keys of a per-sample sampler into batches and names the slot each batch is written to.

    It runs in the main process as the DataLoader dispatches each task, so a slot is chosen only when
    its task is sent. `reclaim`: the DataLoader has drained the last epoch's tasks before it asks for the
    first key of the next (persistent workers), so any slot still marked as filling was abandoned.
    """

    def __init__(
        self, sampler: Sampler, batch_size: int, drop_last: bool, pool: SlotPool, reclaim: bool
    ) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.pool = pool
        self.reclaim = reclaim

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        if self.reclaim:
            self.pool.reclaim()
        batch: list[Any] = []
        for key in self.sampler:
            batch.append(key)
            if len(batch) == self.batch_size:
                yield self.pool.acquire(), batch
                batch = []
        if batch and not self.drop_last:
            yield self.pool.acquire(), batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class SlotWriter(Dataset):
    """Worker side: builds one batch of `(image, label, index)` items straight into its slot."""

    def __init__(self, dataset: Dataset, pool: SlotPool) -> None:
        self.dataset = dataset
        self.slots = pool.slots  # the same shared buffers, inherited or passed once per worker

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, task: tuple[int, list[Any]]) -> tuple[int, Any, torch.Tensor, torch.Tensor]:
        if get_worker_info() is None:  # no workers: seeding each sample must not reseed the training RNG
            with torch.random.fork_rng(devices=[]):
                return self._fill(task)
        try:
            return self._fill(task)
        except UserError as e:  # e.g. an unreadable image: sent back whole, so its one-line message survives
            return FAILED, e, torch.empty(0), torch.empty(0)

    def _fill(self, task: tuple[int, list[Any]]) -> tuple[int, Any, torch.Tensor, torch.Tensor]:
        slot, keys = task
        items = (self.dataset[k] for k in keys)
        if slot < 0:
            images, labels, index = default_collate(list(items))
            return slot, images, labels, index
        out = self.slots[slot]
        labels, index = [], []
        for j, (image, label, i) in enumerate(items):
            if image.shape != out.shape[1:]:
                raise RuntimeError(
                    f"sample {i} has shape {tuple(image.shape)} but the batch holds {tuple(out.shape[1:])}: "
                    "every transform must end at the loader's image size"
                )
            out[j].copy_(image)
            labels.append(label)
            index.append(i)
        return slot, len(labels), torch.tensor(labels), torch.tensor(index)


class SlotLoader(WrappedLoader):
    """A DataLoader over `dataset`'s `(image, label, index)` items whose workers fill shared slots.

    Every image must be uint8 `image_shape`. Slots: each worker may run `prefetch_factor` tasks ahead,
    the caller holds one batch and the DataLoader may dispatch one more before the caller lets go.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: Sampler,
        batch_size: int,
        image_shape: Sequence[int],
        *,
        drop_last: bool,
        num_workers: int,
        prefetch_factor: int | None,
        persistent_workers: bool,
        pin_memory: bool,
        **loader_options: Any,
    ) -> None:
        self.pool = SlotPool(num_workers * (prefetch_factor or 0) + 2, (batch_size, *image_shape))
        self.pin_memory = pin_memory
        # Without workers a task is filled as it is dispatched, so no abandoned one can still be writing.
        reclaim = persistent_workers or num_workers == 0
        batches = SlotSampler(sampler, batch_size, drop_last, self.pool, reclaim=reclaim)
        loader = DataLoader(
            SlotWriter(dataset, self.pool),
            batch_size=None,  # tasks are whole batches already
            sampler=batches,
            num_workers=num_workers,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory=False,  # only labels travel through the queue; images are pinned below
            **loader_options,
        )
        super().__init__(loader, dataset, sampler, batch_size)

    def __iter__(self) -> Iterator[Batch]:
        self.pool.allocate()  # before the workers start: they inherit (or are sent) the buffers once
        try:
            yield from self._batches()
        except Exception:  # not GeneratorExit: a caller that stops early keeps the persistent workers
            self.close()
            raise

    def _batches(self) -> Iterator[Batch]:
        for slot, images_or_count, labels, index in self.loader:
            if slot == FAILED:
                raise images_or_count
            images = images_or_count  # a batch that took PyTorch's path (no free slot)
            if slot >= 0:
                self.pool.filling.discard(slot)
                images = self.pool.slots[slot][:images_or_count]
                if _use_count is None and not self.pin_memory:
                    images = images.clone()  # without a use count a slot's reuse cannot wait for the caller
            if self.pin_memory:
                images = images.pin_memory()  # a copy from the host allocator's cache: the slot is free again
            yield images, labels, index
            del images  # the suspended frame must not keep the slot in use
