"""`data.decode=gpu`: workers ship undecoded payloads; `DeviceDecodeLoader` decodes each batch with nvjpeg
on the device and runs the dataset's per-sample augmentations there.

It lives apart from `decode` because it drives a `FaceDataset`, which itself decodes with `decode`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from deepfake.data.dataset import FaceDataset
from deepfake.data.decode import decode_payloads
from deepfake.data.loader import WrappedLoader
from deepfake.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Seeds = tuple[int, int]  # (blend seed, augmentation seed) of one sample


class PayloadFiles(Dataset):
    """The workers' side: a FaceDataset's payloads, with a UserError (an unreadable file) returned in its item's
    place, so it reaches the main process whole; torch would re-raise it as a multi-line 'Caught DataError in
    DataLoader worker process 1' text."""

    def __init__(self, dataset: FaceDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except UserError as e:
            return e


def collate_payloads(
    items: list[Any],
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[Seeds]] | UserError:
    """Batch payloads as a list: JPEG byte strings differ in length and cannot be stacked before decoding.
    A batch with a failed item is that item's error."""
    failed = next((item for item in items if isinstance(item, UserError)), None)
    if failed is not None:
        return failed
    payloads, labels, index, seeds = zip(*items, strict=True)
    return list(payloads), torch.tensor(labels), torch.tensor(index), list(seeds)


class DeviceDecodeLoader(WrappedLoader):
    """Wraps a DataLoader of payloads: decodes each batch on `device`, then augments each image there.

    The batches come out as uint8 (N, 3, S, S) already on the device.
    """

    dataset: FaceDataset

    def __init__(self, loader: DataLoader, size: int, device: torch.device) -> None:
        dataset = getattr(loader.dataset, "dataset", loader.dataset)  # the FaceDataset inside PayloadFiles
        super().__init__(loader, dataset, loader.sampler, loader.batch_size or 1)
        self.size = size
        self.device = device

    def __iter__(self) -> Iterator[Batch]:
        try:
            yield from self._batches()
        except Exception:  # a worker's error: stop the workers, or the exit would wait on them
            self.close()
            raise

    def _batches(self) -> Iterator[Batch]:
        ds = self.dataset
        for batch in self.loader:
            if isinstance(batch, UserError):
                raise batch
            payloads, labels, index, seeds = batch
            images = decode_payloads(payloads, self.size, self.device)
            # Per-sample seeding must not disturb the training RNG (dropout), so it runs in a forked state.
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                images = [ds.finish(im, int(i), *s) for im, i, s in zip(images, index, seeds, strict=True)]
            yield torch.stack(images), labels, index
