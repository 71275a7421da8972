"""A test set's explanations as data, for evaluate.py's `eval.explain` and `eval.embeddings`.

- `grid_faces`: the most confidently wrong and right faces with their heatmaps (explain.png);
- `set_faithfulness`: the pointing game and heat share over a seeded sample of the fakes whose manifest row names
  a mask (`deepfake.explain.faithfulness`); a clip model's fakes count frame by frame;
- `set_features`: the first member's pooled features of a seeded sample, with thumbnails, for the projector.

Faces are read from the set's own dataset (the pixels scored: a clip model's clip, evaluated without jitter), and
explained by every member at its own size, with the run's TTA, as predict.py does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from deepfake.data.clips import ClipDataset
from deepfake.data.decode import decode_file
from deepfake.data.samples import Sample
from deepfake.explain.cam import Explained, explain_crops
from deepfake.explain.embeddings import THUMB, pooled_features, sample_indices
from deepfake.explain.faithfulness import faithfulness
from deepfake.explain.grid import confident

#: The key that names the target layer in evaluate (and train.py's last step): the model config's.
LAYER_KEY = "model.explain_layer"


@dataclass
class Explaining:
    """What every explanation of a set needs: the members, method, layer, TTA and where to compute."""

    members: Sequence[Explained]
    method: str
    layer: str | None
    tta: str
    device: torch.device
    batch_size: int = 32

    def maps(self, crops: torch.Tensor) -> np.ndarray:
        """Mean heatmaps (N, S, S) of uint8 crops (N, 3, S, S), or of one clip's frames."""
        return explain_crops(
            self.members, crops.to(self.device), self.method, self.layer, self.tta, LAYER_KEY, self.batch_size
        )


@dataclass
class ExplainedFace:
    crop: np.ndarray  # uint8 (S, S, 3); a clip's middle frame
    heat: np.ndarray  # (S, S) in [0, 1]
    prob: float
    label: int
    name: str  # the video, or the image's path


def item(dataset: Any, index: int) -> torch.Tensor:
    """uint8 (3, S, S) image or (T, 3, S, S) clip of a test dataset, as its loader yields it."""
    return dataset[index][0] if isinstance(dataset, ClipDataset) else dataset.load(index)


def clip_rows(dataset: Any, index: int) -> list[int]:
    """The frame rows (of `dataset.frames`) an evaluation clip is made of."""
    return dataset.positions(index, 0)


def grid_faces(
    how: Explaining, dataset: Any, samples: Sequence[Sample], probs: np.ndarray, threshold: float, count: int
) -> tuple[list[ExplainedFace], list[ExplainedFace]]:
    """The `count` most confidently wrong and right faces, explained."""
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    wrong, right = confident(labels, np.asarray(probs), threshold, count)

    def explained(indices: list[int]) -> list[ExplainedFace]:
        faces = []
        for i in indices:
            x = item(dataset, i)
            heat = how.maps(x if x.ndim == 4 else x[None])
            k = len(heat) // 2  # a clip's middle frame; an image's only one
            crop = (x[k] if x.ndim == 4 else x).permute(1, 2, 0).numpy()
            name = samples[i].video or samples[i].path
            faces.append(ExplainedFace(crop, heat[k], float(probs[i]), int(labels[i]), name))
        return faces

    return explained(wrong), explained(right)


def _mask(path: str, size: int) -> np.ndarray:
    """A mask file as (S, S) floats, with the geometry of its crop's decode (centre square, resized)."""
    return decode_file(path, size)[0].float().div(255).numpy()


def set_faithfulness(
    how: Explaining, dataset: Any, samples: Sequence[Sample], size: int, limit: int, seed: int
) -> dict[str, float | int] | None:
    """Pointing game and heat share over at most `limit` masked fakes (a seeded sample), at the crops' size
    `size`; None when the set has no fake with a mask."""
    if isinstance(dataset, ClipDataset):
        pairs = [
            (i, [r for r in clip_rows(dataset, i) if dataset.frames[r].mask])
            for i, s in enumerate(samples)
            if s.label == 1
        ]
        masked = [(i, rows) for i, rows in pairs if rows]
    else:
        masked = [(i, []) for i, s in enumerate(samples) if s.label == 1 and s.mask]
    if not masked or limit == 0:
        return None
    chosen = [masked[k] for k in sample_indices(len(masked), limit, seed)]
    heats, masks = [], []
    if isinstance(dataset, ClipDataset):
        for i, rows in chosen:
            maps = how.maps(item(dataset, i))
            where = clip_rows(dataset, i)
            for row in rows:
                heats.append(maps[where.index(row)])
                masks.append(_mask(dataset.frames[row].mask, size))
    else:
        for start in range(0, len(chosen), how.batch_size):
            batch = [i for i, _ in chosen[start : start + how.batch_size]]
            heats.extend(how.maps(torch.stack([item(dataset, i) for i in batch])))
            masks.extend(_mask(samples[i].mask, size) for i in batch)
    scores = faithfulness(heats, masks)
    return {**scores, "fakes_with_mask": len(masked), "method": how.method}


@torch.no_grad()
def set_features(
    model: torch.nn.Module,
    img_size: int,
    dataset: Any,
    indices: Sequence[int],
    device: torch.device,
    batch_size: int = 64,
) -> tuple[np.ndarray, torch.Tensor]:
    """float32 (N, D) pooled features of the items `indices` and uint8 (N, 3, THUMB, THUMB) thumbnails (a
    clip's middle frame)."""
    features, thumbs = [], []
    model.eval()
    for start in range(0, len(indices), batch_size):
        x = torch.stack([item(dataset, i) for i in indices[start : start + batch_size]])
        if x.shape[-1] != img_size:
            x = TF.resize(x.flatten(0, -4), [img_size, img_size], antialias=True).unflatten(0, x.shape[:-3])
        features.append(pooled_features(model, x.to(device)).cpu())
        frames = x[:, x.shape[1] // 2] if x.ndim == 5 else x
        thumbs.append(TF.resize(frames, [THUMB, THUMB], antialias=True))
    if not features:
        return np.zeros((0, 0), np.float32), torch.zeros(0, 3, THUMB, THUMB, dtype=torch.uint8)
    return torch.cat(features).numpy(), torch.cat(thumbs)
