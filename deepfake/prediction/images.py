"""predict.py's image half: face crops decoded exactly as evaluation decodes them, scored through the ensemble.

Same dataset class, the checkpoint's size and normalisation, batched through a DataLoader; a file that cannot
be read yields its error (and a blank image that is never reported) instead of raising. Results come batch by
batch, so a window of 4096 images is written as it is scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from deepfake.data.dataset import FaceDataset
from deepfake.data.samples import Sample
from deepfake.data.transforms import eval_transform
from deepfake.evaluation.ensemble import Ensemble, Member
from deepfake.system.precision import Precision
from deepfake.system.thread_probe import paced


class ImageFiles(Dataset):
    """Evaluation-decoded images; an unreadable file yields a blank image and its error instead of raising."""

    def __init__(self, paths: Sequence[str], img_size: int) -> None:
        samples = [Sample(path=p, label=0, video=p, method="") for p in paths]
        self.faces = FaceDataset(samples, eval_transform(img_size), decode_size=img_size)
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str, float]:
        """(image, index, error or "", seconds its decode took)."""
        t0 = time.perf_counter()
        try:
            image, _, _ = self.faces[index]
            return image, index, "", time.perf_counter() - t0
        except Exception as e:  # any failure on one file is that file's problem: reported in its row
            cause = e.__cause__ or e.__context__ or e  # the decoder's own message, not the training hint
            blank = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8)
            return blank, index, f"{type(cause).__name__}: {cause}", time.perf_counter() - t0


@torch.no_grad()
def image_results(
    ensemble: Ensemble, paths: Sequence[str], device: torch.device, batch_size: int = 64, num_workers: int = 0
) -> Iterator[tuple[int, float, str, float]]:
    """(index into `paths`, probability (NaN where unreadable), error, decode seconds) of each image, in order.

    Images are decoded once per distinct member input size, so each member scores exactly the pixels its single
    prediction would; the last size's pass hands the results out batch by batch (one transfer per batch).
    """
    logits = torch.empty(len(ensemble.members), len(paths), device=device)
    errors, seconds = [""] * len(paths), [0.0] * len(paths)
    groups = list(ensemble.groups().items())
    for g, (size, which) in enumerate(groups):
        loader = DataLoader(
            ImageFiles(paths, size),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        for member in which:
            ensemble.members[member].model.eval()
        rows = torch.tensor(which, device=device).unsqueeze(1)
        for images, index, messages, took in paced(loader, ensemble.threads, units=lambda b: len(b[0])):
            columns = index.to(device)
            logits[rows, columns.unsqueeze(0)] = ensemble.raw_logits(images.to(device), which)
            for i, message, t in zip(index.tolist(), messages, took.tolist(), strict=True):
                errors[i] = errors[i] or message
                seconds[i] += t
            if g < len(groups) - 1:
                continue
            probs = ensemble.combine(ensemble.calibrated(logits[:, columns])).double().cpu().tolist()
            for i, prob in zip(index.tolist(), probs, strict=True):
                yield i, math.nan if errors[i] else prob, errors[i], seconds[i]


def predict_images(
    ensemble: Ensemble, paths: Sequence[str], device: torch.device, batch_size: int = 64, num_workers: int = 0
) -> tuple[np.ndarray, list[str]]:
    """The ensemble's probabilities (NaN where unreadable) and error messages, in `paths` order."""
    probs, errors = np.full(len(paths), np.nan), [""] * len(paths)
    for i, prob, error, _ in image_results(ensemble, paths, device, batch_size, num_workers):
        probs[i], errors[i] = prob, error
    return probs, errors


def predict_paths(
    model: torch.nn.Module,
    paths: Sequence[str],
    img_size: int,
    precision: Precision,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """One model's fake probabilities (NaN where unreadable) and error messages ("" where fine), in order."""
    ensemble = Ensemble([Member(model=model, img_size=img_size)], precision=precision)
    return predict_images(ensemble, paths, device, batch_size, num_workers)
