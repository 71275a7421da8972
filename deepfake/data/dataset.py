"""Image dataset and sampler whose randomness derives from (seed, epoch, index).

Deriving every random choice from that triple makes a run independent of the number of workers and lets
a resume restart mid-epoch at the exact sample where it stopped. Self-blended fakes (SBI) are extra
indices after the real samples, each bound to the real image it is made from, so they obey the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors

from deepfake.data.cache import DecodedCache
from deepfake.data.decode import decode_file, decode_payloads, read_payload
from deepfake.data.samples import Sample
from deepfake.data.sbi import MASK_SCALE, UNKNOWN_MASK, landmark_path, load_landmarks, self_blend

SBI_METHOD = "sbi"
_SBI_STREAM = 0x5B1  # keeps the SBI generator's stream apart from the augmentations'


def sample_seed(seed: int, epoch: int, index: int, draw: int = 0) -> int:
    """The seed of one sample in one epoch; `draw` separates repeats of an index (weighted sampling)."""
    key = [seed, epoch, index] + ([draw] if draw else [])
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_generators(seed: int, device: torch.device) -> None:
    """Seed the generators the transforms draw from: the CPU one, plus the GPU's when the image lives there.

    Not `torch.manual_seed`: in a process without CUDA it queues a lazy CUDA seed with a formatted stack
    trace, which cost 140 us per sample, more than the augmentations of a cached image.
    """
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


class FaceDataset(Dataset):
    """uint8 (3, S, S) face crops; items are keyed by `(index, epoch[, draw])` from the sampler.

    Images come from `cache` when given, else are decoded (`decode_size` = S; None keeps each image's own size,
    for `data.geometry=crop`, whose transform then crops). Indices past the samples are
    SBI fakes of `sbi_sources[index - len(samples)]`. With `deferred`, items are undecoded payloads plus
    their seed, and `finish` runs later on the device (`data.decode=gpu`). With `masks`, each image gets its
    blend mask as a fourth channel (`deepfake.model.mask_head`): SBI fakes their own, real faces an empty
    one, other fakes the "unknown" value; the mask follows the image's geometric augmentations.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable | None = None,
        seed: int = 0,
        decode_size: int | None = None,
        *,
        cache: DecodedCache | None = None,
        sbi_sources: Sequence[int] = (),
        deferred: bool = False,
        masks: bool = False,
        align: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.align = (
            align  # `data.format_align`: every decoded image re-encoded alike, before any augmentation
        )
        self.transform = transform
        self.seed = seed
        self.decode_size = decode_size
        self.cache = cache
        self.sbi_sources = list(sbi_sources)
        self.deferred = deferred
        self.masks = masks
        # Looked up once: a stat per SBI source here instead of one per sample per epoch in the workers.
        self.landmarks = {i: landmark_path(self.samples[i].path) for i in set(self.sbi_sources)}

    def __len__(self) -> int:
        return len(self.samples) + len(self.sbi_sources)

    def source(self, index: int) -> int:
        """The sample whose image an index shows (an SBI fake shows its real source, blended)."""
        n = len(self.samples)
        return index if index < n else self.sbi_sources[index - n]

    @property
    def labels(self) -> np.ndarray:
        real = np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))
        return np.concatenate([real, np.ones(len(self.sbi_sources), dtype=np.int64)])

    @property
    def videos(self) -> list[str]:
        fakes = [f"{self.samples[i].video}#{SBI_METHOD}" for i in self.sbi_sources]
        return [s.video for s in self.samples] + fakes

    def load(self, index: int) -> torch.Tensor:
        """The canonical uint8 (3, S, S) image of an index, before SBI and augmentation."""
        i = self.source(index)
        image = (
            self.cache[i] if self.cache is not None else decode_file(self.samples[i].path, self.decode_size)
        )
        return self.align(image) if self.align is not None else image

    def payload(self, index: int) -> torch.Tensor:
        """What a worker ships when decoding happens on the device: cached pixels or the file's bytes."""
        i = self.source(index)
        if self.cache is not None:
            return self.cache[i]
        return read_payload(self.samples[i].path, self.decode_size)

    def finish(self, image: torch.Tensor, index: int, seed: int, augment_seed: int) -> torch.Tensor:
        """Blend (SBI indices) and augment one image with the sample's seeds, on whatever device holds it."""
        blend = None
        if index >= len(self.samples):
            g = torch.Generator().manual_seed(seed ^ _SBI_STREAM)
            image, blend = self_blend(image, g, self._landmarks(index, image.shape[-1]))
        if not self.masks:
            if self.transform is not None:
                seed_generators(augment_seed, image.device)
                image = self.transform(image)
            return image
        mask = self._mask_channel(blend, index, image)
        if self.transform is not None:
            seed_generators(augment_seed, image.device)
            image, mask = self.transform(image, mask)  # the same crop and flip draws as the image alone
        return torch.cat([image, mask])

    def _mask_channel(self, blend: torch.Tensor | None, index: int, image: torch.Tensor) -> tv_tensors.Mask:
        """uint8 (1, H, W): the SBI blend mask, empty for a real face, UNKNOWN_MASK for a fake of unknown mask."""
        if blend is not None:
            return tv_tensors.Mask(blend.mul(MASK_SCALE).round_().to(torch.uint8)[None])
        fill = UNKNOWN_MASK if self.label(index) else 0
        return tv_tensors.Mask(
            torch.full((1, *image.shape[-2:]), fill, dtype=torch.uint8, device=image.device)
        )

    def _landmarks(self, index: int, size: int) -> torch.Tensor | None:
        i = self.source(index)
        path = self.landmarks.get(i)
        if path is None:
            return None
        with Image.open(self.samples[i].path) as im:  # header only: the original size maps the points
            return load_landmarks(path, im.size, size)

    def preview(self, index: int, epoch: int) -> torch.Tensor:
        """The augmented image the loop trains on for (index, epoch), on the CPU, for logging.

        Runs in a forked RNG, since seeding a sample would otherwise reseed the training RNG (dropout); a
        deferred (`data.decode=gpu`) item is decoded here first, as the device loader would.
        """
        with torch.random.fork_rng(devices=[]):
            if not self.deferred:
                return self[(index, epoch)][0][:3]
            payload, _, _, (seed, augment_seed) = self[(index, epoch)]
            assert self.decode_size is not None  # the DataModule gives deferred datasets their size
            image = decode_payloads([payload], self.decode_size, torch.device("cpu"))[0]
            return self.finish(image, index, seed, augment_seed)[:3]

    def label(self, index: int) -> int:
        return self.samples[index].label if index < len(self.samples) else 1

    def __getitem__(self, key: int | Sequence[int]) -> tuple:
        index, epoch, *rest = (key, 0) if isinstance(key, int) else key
        seed = sample_seed(self.seed, epoch, index, *rest)
        # An SBI fake is augmented exactly like its source (as in the SBI paper): the pair differs by the blend.
        source = self.source(index)
        augment_seed = seed if source == index else sample_seed(self.seed, epoch, source, *rest)
        if self.deferred:
            return self.payload(index), self.label(index), index, (seed, augment_seed)
        return self.finish(self.load(index), index, seed, augment_seed), self.label(index), index


def sbi_groups(num_samples: int, sbi_sources: Sequence[int]) -> list[list[int]]:
    """Index groups a sampler keeps together: each real source with its SBI fakes, others alone."""
    groups = [[i] for i in range(num_samples)]
    for k, source in enumerate(sbi_sources):
        groups[source].append(num_samples + k)
    return groups


class EpochSampler(Sampler[tuple[int, ...]]):
    """Yields `(index, epoch)`; the order is seeded by (seed, epoch) and resumable at `start`.

    With `groups`, the shuffle permutes groups and keeps each group's indices adjacent (an SBI fake next to
    its source, so both usually share a batch). With `weights`, an epoch draws `num_samples` indices with
    replacement in proportion to them (class balance; groups are then not kept together) and yields
    `(index, epoch, draw)`, where `draw` counts earlier repeats of that index, so a repeat is augmented anew.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        weights: Sequence[float] | None = None,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.groups = None if groups is None else [list(g) for g in groups]
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()
        if not self.shuffle:
            return list(range(self.num_samples))
        if self.groups is not None:
            return [i for k in torch.randperm(len(self.groups), generator=g).tolist() for i in self.groups[k]]
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        order = self.order()
        if self.weights is None:
            for i in order[self.start :]:
                yield i, self.epoch
            return
        seen: dict[int, int] = {}
        for position, i in enumerate(order):
            draw = seen.get(i, 0)
            seen[i] = draw + 1
            if position >= self.start:
                yield i, self.epoch, draw

    def __len__(self) -> int:
        return self.num_samples - self.start


class LimitedSampler(Sampler[tuple[int, ...]]):
    """The first `limit` samples of an EpochSampler's epoch (the debug modes' batch limits).

    With `fixed`, every epoch repeats epoch 0's samples in the same order (`debug.overfit_batches`: the same
    batches, augmented the same way). An unshuffled sampler (validation) takes evenly spaced indices instead of
    the first ones, so a limited pass still sees every class of a split whose rows are sorted by class.
    Exposes what ShardedSampler reads (`epoch`, `num_samples`, `order`, `set_epoch`), so it shards the same.
    """

    def __init__(self, base: EpochSampler, limit: int, fixed: bool = False) -> None:
        self.base = base
        self.num_samples = min(limit, base.num_samples)
        self.fixed = fixed
        self.start = 0

    @property
    def epoch(self) -> int:
        return self.base.epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(0 if self.fixed else epoch)
        self.start = start

    def _spread(self) -> bool:
        return not self.base.shuffle and self.base.weights is None

    def order(self) -> list[int]:
        if self._spread():
            n, k = self.base.num_samples, self.num_samples
            return [i * n // k for i in range(k)]
        return self.base.order()[: self.num_samples]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        if self._spread():
            for i in self.order()[self.start :]:
                yield i, self.base.epoch
            return
        for position, key in enumerate(self.base):
            if position >= self.num_samples:
                return
            if position >= self.start:
                yield key

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardedSampler(Sampler[tuple[int, int]]):
    """One rank's share of an EpochSampler's permutation: positions rank, rank + W, rank + 2W, ...

    `pad=True` (training) repeats the first indices so every rank gets the same number of samples, hence
    the same number of steps, as torch's DistributedSampler does. `pad=False` (evaluation) keeps every
    sample exactly once over all ranks; shards then differ by at most one. `set_epoch(epoch, start)` skips
    the first `start` samples of this rank's shard, so a resume with the same world size continues exactly.
    """

    def __init__(self, base: EpochSampler, rank: int, world_size: int, pad: bool) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.start = 0

    @property
    def epoch(self) -> int:
        return self.base.epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.start = start

    def order(self) -> list[int]:
        """This rank's indices for the current epoch, in the order it visits them."""
        order = self.base.order()
        if self.pad and order and len(order) % self.world_size:
            total = -(-len(order) // self.world_size) * self.world_size
            order = (order * (total // len(order) + 1))[:total]
        return order[self.rank :: self.world_size]

    def _shard_len(self) -> int:
        n = self.base.num_samples
        if self.pad:
            return -(-n // self.world_size) if n else 0
        return len(range(self.rank, n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.base.epoch
        for i in self.order()[self.start :]:
            yield i, epoch

    def __len__(self) -> int:
        return max(0, self._shard_len() - self.start)
