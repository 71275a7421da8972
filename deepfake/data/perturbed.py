"""A test set's crops under one robustness setting, made in the loader workers and never written to disk.

`PerturbedCrops` stands where a decoded cache stands (`FaceDataset(cache=...)`, `ClipDataset(cache=...)`): item
i is sample i's canonical uint8 (3, S, S) crop. An image setting decodes the crop at its own size, perturbs it
with the generator of (seed, video, file name) and only then fits it to S, as the protocol perturbs frames
before any resize. VC encodes all crops of the crop's video, in path order, as one clip; a worker keeps the
clips it encoded last, so a video whose crops span two batches is encoded once per worker that sees it. The
clean setting decodes exactly as evaluation always does (`decode_file(path, S)`), so its row is the set's
ordinary result.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from deepfake.data.clips import group_videos
from deepfake.data.decode import decode_file, fit
from deepfake.data.samples import Sample
from deepfake.errors import DataError
from deepfake.perturbations.protocol import Setting, frame_rng, perturb_clip, perturb_image

KEEP_CLIPS = 4  # encoded videos a worker keeps: consecutive batches share at most a video or two


def require_videos(samples: Sequence[Sample], name: str) -> None:
    """VC encodes each video's crops as one clip: refuse a set in which no two crops share a video."""
    groups = group_videos(samples)
    if samples and all(len(g) == 1 for g in groups):
        raise DataError(
            f"perturbation VC re-encodes each video's frames as one clip, but every image of test set {name} is "
            "a video of its own (no two share a video id); lay it out as <set>/{real,fake}/<video>/<frame> or "
            "give a manifest with a video column, or leave VC out of perturb.types"
        )


class PerturbedCrops:
    """The crops of `samples` under `setting`, indexed like the samples; picklable for the loader workers."""

    def __init__(self, samples: Sequence[Sample], setting: Setting, seed: int, size: int | None) -> None:
        self.paths = [s.path for s in samples]
        self.videos = [s.video for s in samples]
        self.setting, self.seed, self.size = setting, seed, size
        self.clip_of: dict[int, list[int]] = {}
        if setting.video:
            for group in group_videos(samples):
                for i in group:
                    self.clip_of[i] = group
        self._clips: OrderedDict[int, dict[int, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def native(self, i: int) -> np.ndarray:
        """Sample i's crop as stored: uint8 (H, W, 3)."""
        return decode_file(self.paths[i], None).permute(1, 2, 0).numpy()

    def perturbed(self, i: int) -> np.ndarray:
        """Sample i's crop under the setting, at its own size: uint8 (H, W, 3)."""
        if self.setting.clean:
            return self.native(i)
        if not self.setting.video:
            rng = frame_rng(self.seed, self.videos[i], Path(self.paths[i]).name)
            return perturb_image(self.setting, self.native(i), rng)
        group = self.clip_of[i]
        key = group[0]
        if key not in self._clips:
            frames = perturb_clip(self.setting, [self.native(j) for j in group], [])
            self._clips[key] = dict(zip(group, frames, strict=True))
            while len(self._clips) > KEEP_CLIPS:
                self._clips.popitem(last=False)
        return self._clips[key][i]

    def __getitem__(self, i: int) -> torch.Tensor:
        """The crop fitted to S; with `size` None (`data.geometry=crop`) at its own size, for the centre crop."""
        if self.setting.clean:
            return decode_file(self.paths[i], self.size)
        image = torch.from_numpy(np.ascontiguousarray(self.perturbed(i))).permute(2, 0, 1)
        return fit(image, self.size) if self.size else image
