"""Clips for the video-level model: T frames of one video, augmented alike, as one uint8 (T, 3, S, S) item.

The rows (frames) of a split are grouped by video; an item is one video. Its T frames are evenly spaced over
the video's frames in path order: segment centres for evaluation, and in training a frame drawn within each
of T equal segments (TSN-style temporal jitter) from the item's seed. A video with fewer than T frames
repeats its frames in order (nearest-neighbour upsampling in time), so every clip has T frames and the
positional embedding always sees a full clip. Every frame of a clip is augmented with the same parameters:
the transform's generator is reseeded with the clip's seed before each frame, so each frame draws the same
crop, flip and jitter (the draws depend on the image size only, which all frames share).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from deepfake.data.cache import DecodedCache
from deepfake.data.dataset import sample_seed, seed_generators
from deepfake.data.decode import decode_file
from deepfake.data.samples import Sample
from deepfake.errors import DataError

_OFFSET_STREAM = 0x7E3  # keeps the temporal jitter's stream apart from the augmentations'


def clip_positions(count: int, frames: int, rng: np.random.Generator | None = None) -> list[int]:
    """`frames` positions in [0, count), one per segment of T equal ones: its middle or (with rng) a random one.

    With count >= frames the segments are whole frames wide, so the positions are distinct; with fewer frames
    the positions repeat frames in order.
    """
    if count < 1 or frames < 1:
        raise ValueError(f"need count >= 1 and frames >= 1 (got {count}, {frames})")
    if count < frames:
        return [int((i + 0.5) * count / frames) for i in range(frames)]
    bounds = np.round(np.linspace(0, count, frames + 1)).astype(int)
    widths = np.diff(bounds)
    share = rng.random(frames) if rng is not None else np.full(frames, 0.5)
    return (bounds[:-1] + np.minimum((share * widths).astype(int), widths - 1)).tolist()


def group_videos(samples: Sequence[Sample]) -> list[list[int]]:
    """Indices of each video's frames in path order, videos in order of first appearance; labels must agree."""
    by_video: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        by_video.setdefault((s.split, s.video), []).append(i)
    groups = [sorted(g, key=lambda i: samples[i].path) for g in by_video.values()]
    for g in groups:
        if len({samples[i].label for i in g}) > 1:
            raise DataError(
                f"video {samples[g[0]].video!r} has both real and fake frames; a clip needs one label per "
                "video: fix the manifest's video column (ids must be unique across classes)"
            )
    return groups


class ClipDataset(Dataset):
    """One item per video: (uint8 (T, 3, S, S), label, index), keyed by `(index, epoch[, draw])`.

    `samples` holds each video's first frame (its path and video id stand for the clip in predictions);
    `frames` the rows of all frames. `jitter` draws the temporal positions per epoch (training).
    """

    def __init__(
        self,
        frames: Sequence[Sample],
        length: int,
        transform: Callable | None = None,
        seed: int = 0,
        decode_size: int | None = None,
        *,
        cache: DecodedCache | None = None,
        jitter: bool = False,
    ) -> None:
        self.frames = list(frames)
        self.length = length
        self.transform = transform
        self.seed = seed
        self.decode_size = decode_size
        self.cache = cache
        self.jitter = jitter
        self.groups = group_videos(self.frames)
        self.samples = [self.frames[g[0]] for g in self.groups]
        self.deferred = False  # clips decode on the CPU (data.decode=gpu is refused with them)
        self.sbi_sources: list[int] = []  # nor are SBI fakes made per clip

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self.samples))

    @property
    def videos(self) -> list[str]:
        return [s.video for s in self.samples]

    def positions(self, index: int, seed: int) -> list[int]:
        """Which frames (rows of `frames`) the clip of `index` shows for this seed."""
        group = self.groups[index]
        rng = np.random.default_rng([seed, _OFFSET_STREAM]) if self.jitter else None
        return [group[p] for p in clip_positions(len(group), self.length, rng)]

    def load(self, row: int) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[row]
        return decode_file(self.frames[row].path, self.decode_size)

    def clip(self, rows: Sequence[int], seed: int) -> torch.Tensor:
        """The frames of `rows`, each augmented from the same generator state: one set of parameters."""
        out = []
        for row in rows:
            image = self.load(row)
            if self.transform is not None:
                seed_generators(seed, image.device)
                image = self.transform(image)
            out.append(image)
        return torch.stack(out)

    def __getitem__(self, key: int | Sequence[int]) -> tuple[torch.Tensor, int, int]:
        index, epoch, *rest = (key, 0) if isinstance(key, int) else key
        seed = sample_seed(self.seed, epoch, index, *rest)
        return self.clip(self.positions(index, seed), seed), int(self.samples[index].label), index

    def preview(self, index: int, epoch: int) -> torch.Tensor:
        """The clip trained on for (index, epoch), its frames side by side (3, S, T*S), for logging."""
        with torch.random.fork_rng(devices=[]):
            clip = self[(index, epoch)][0]
        return torch.cat(list(clip), dim=-1)
