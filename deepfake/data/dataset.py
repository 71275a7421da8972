"""Image dataset and sampler whose randomness derives from (seed, epoch, index).

Deriving every random choice from that triple makes a run independent of the number of workers and lets
a resume restart mid-epoch at the exact sample where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from deepfake.data.samples import Sample
from deepfake.errors import DataError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class FaceDataset(Dataset):
    """Decodes images to uint8 CHW tensors; items are indexed by `(index, epoch)` pairs from the sampler."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable | None = None,
        seed: int = 0,
        decode_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.decode_size = decode_size

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))

    @property
    def videos(self) -> list[str]:
        return [s.video for s in self.samples]

    def load(self, index: int) -> torch.Tensor:
        """Decode to uint8 (3, H, W); large JPEGs decode at a reduced DCT scale that still covers decode_size."""
        path = self.samples[index].path
        try:
            with Image.open(path) as im:
                if self.decode_size:
                    im.draft("RGB", (self.decode_size, self.decode_size))
                array = np.array(im.convert("RGB"))
            return torch.from_numpy(array).permute(2, 0, 1)
        except Exception as e:  # a corrupt file must stop the run by name, never be replaced silently
            raise DataError(
                f"cannot read image {path}: {e}. Run `python train.py check=true` to list bad files."
            ) from None

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image = self.load(index)
        if self.transform is not None:
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            image = self.transform(image)
        return image, self.samples[index].label, index


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields `(index, epoch)`; the order is a permutation seeded by (seed, epoch), resumable at `start`."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.order()[self.start :]:
            yield i, self.epoch

    def __len__(self) -> int:
        return self.num_samples - self.start
