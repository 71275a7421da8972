"""`data.decode=gpu`: workers ship undecoded payloads; `DeviceDecodeLoader` decodes each batch with nvjpeg
on the device and runs the dataset's per-sample augmentations there.

It lives apart from `decode` because it drives a `FaceDataset`, which itself decodes with `decode`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from deepfake.data.dataset import FaceDataset
from deepfake.data.decode import decode_payloads
from deepfake.data.loader import WrappedLoader

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Seeds = tuple[int, int]  # (blend seed, augmentation seed) of one sample


def collate_payloads(
    items: list[tuple[torch.Tensor, int, int, Seeds]],
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[Seeds]]:
    """Batch payloads as a list: JPEG byte strings differ in length and cannot be stacked before decoding."""
    payloads, labels, index, seeds = zip(*items, strict=True)
    return list(payloads), torch.tensor(labels), torch.tensor(index), list(seeds)


class DeviceDecodeLoader(WrappedLoader):
    """Wraps a DataLoader of payloads: decodes each batch on `device`, then augments each image there.

    The batches come out as uint8 (N, 3, S, S) already on the device.
    """

    dataset: FaceDataset

    def __init__(self, loader: DataLoader, size: int, device: torch.device) -> None:
        super().__init__(loader, loader.dataset, loader.sampler, loader.batch_size or 1)
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
        for payloads, labels, index, seeds in self.loader:
            images = decode_payloads(payloads, self.size, self.device)
            # Per-sample seeding must not disturb the training RNG (dropout), so it runs in a forked state.
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                images = [ds.finish(im, int(i), *s) for im, i, s in zip(images, index, seeds, strict=True)]
            yield torch.stack(images), labels, index
