"""One scorer for one detector or several: resize per member, flip TTA, temperature, ensemble mean.

`Ensemble` satisfies the crop-scoring contract of the video path: called on uint8 crops (N, 3, S, S) on the
device, it returns float32 probabilities of fake (N,) on the device. Per member it resizes the crops to the
member's own input size when S differs (torchvision v2, antialiased), takes its logit (the flip-TTA logit of the
mean probability with `tta=flip`), divides it by the member's temperature, and averages the members: their
probabilities (`mean=prob`), or their logits followed by one sigmoid (`mean=logit`). Image paths decode each
distinct member size once (`groups`), so each member sees exactly the pixels its single prediction sees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import ListConfig
from torch import nn
from torchvision.transforms.v2 import functional as TF

from deepfake.choices import ENSEMBLE_MEANS, TTA
from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.inference import LoadedDetector, load_detector
from deepfake.evaluation.threshold import checked_val_threshold
from deepfake.evaluation.tta import tta_logits
from deepfake.model.temporal import clip_length
from deepfake.system.precision import Precision
from deepfake.system.thread_probe import ThreadTuner, paced

log = logging.getLogger("deepfake")


@dataclass
class Member:
    model: nn.Module  # in eval mode, on the scoring device
    img_size: int  # the input size it was trained at
    temperature: float = 1.0  # divides its logit; 1 = uncalibrated
    name: str = ""  # the checkpoint it came from
    operating_point: dict | None = None  # its validation threshold for eval.target_fpr, if it has one
    val_threshold: float | None = None  # the raw probability of best validation balanced accuracy, if known


class Ensemble:
    """Members scored alike; a single member is an ensemble of one (its own prediction, unchanged)."""

    def __init__(
        self,
        members: Sequence[Member],
        tta: str = "none",
        mean: str = "prob",
        precision: Precision | None = None,
    ) -> None:
        if tta not in TTA:
            raise ConfigError(f"tta={tta!r} is not one of {', '.join(TTA)}")
        if mean not in ENSEMBLE_MEANS:
            raise ConfigError(f"ensemble.mean={mean!r} is not one of {', '.join(ENSEMBLE_MEANS)}")
        self.members = list(members)
        self.tta, self.mean = tta, mean
        self.precision = precision or Precision("cpu", None)
        self.threads: ThreadTuner | None = None  # evaluate, predict: times the first batches' thread counts

    @property
    def temperatures(self) -> list[float]:
        return [m.temperature for m in self.members]

    def groups(self) -> dict[int, list[int]]:
        """Member indices by input size, in size order: one decode per size scores them all."""
        found: dict[int, list[int]] = {}
        for i, member in enumerate(self.members):
            found.setdefault(member.img_size, []).append(i)
        return dict(sorted(found.items()))

    @torch.no_grad()
    def raw_logits(self, images: torch.Tensor, which: Sequence[int] | None = None) -> torch.Tensor:
        """(len(which), N) float32 logits of the members `which` (all by default), before their temperatures."""
        out = []
        for i in range(len(self.members)) if which is None else which:
            member = self.members[i]
            x = images
            if tuple(x.shape[-2:]) != (member.img_size, member.img_size):
                x = TF.resize(x, [member.img_size, member.img_size], antialias=True)
            with self.precision.autocast():
                out.append(tta_logits(member.model, x, self.tta))
        return torch.stack(out)

    def calibrated(self, logits: torch.Tensor, which: Sequence[int] | None = None) -> torch.Tensor:
        """Member logits divided by their temperatures (rows as in `raw_logits`)."""
        temps = self.temperatures if which is None else [self.temperatures[i] for i in which]
        return logits / torch.tensor(temps, dtype=logits.dtype, device=logits.device).unsqueeze(1)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """The ensemble's probabilities (N,) from all members' logits (M, N)."""
        if self.mean == "logit":
            return torch.sigmoid(logits.mean(0))
        return torch.sigmoid(logits).mean(0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) on the device -> float32 probabilities of fake (N,) on the device."""
        return self.combine(self.calibrated(self.raw_logits(images)))


def checkpoint_list(checkpoint: str | Sequence[str]) -> list[str]:
    """`checkpoint=` as a list of paths: one string, or a non-empty list of them."""
    if isinstance(checkpoint, str):
        return [checkpoint]
    many = isinstance(checkpoint, list | tuple | ListConfig) and len(checkpoint) > 0
    if many and all(isinstance(c, str) and c for c in checkpoint):
        return [str(c) for c in checkpoint]
    raise ConfigError(
        f"checkpoint={checkpoint!r} is neither a path nor a list of paths: pass checkpoint=<run dir | .pt> "
        "or checkpoint=[run_a,run_b]"
    )


def load_ensemble(
    checkpoints: Sequence[str],
    device: torch.device,
    precision: Precision,
    tta: str = "none",
    mean: str = "prob",
    calibrated: bool = True,
) -> tuple[Ensemble, list[LoadedDetector]]:
    """Load every checkpoint (each through `load_detector`'s checks) and make them one ensemble on `device`."""
    loaded = [load_detector(path) for path in checkpoints]
    return ensemble_of(loaded, device, precision, tta, mean, calibrated), loaded


def ensemble_of(
    loaded: Sequence[LoadedDetector],
    device: torch.device,
    precision: Precision,
    tta: str = "none",
    mean: str = "prob",
    calibrated: bool = True,
) -> Ensemble:
    """Loaded detectors as ensemble members on `device`, with their temperatures unless `calibrated=False`."""
    members = [
        Member(
            model=d.model.to(device),
            img_size=d.img_size,
            temperature=d.temperature if calibrated and d.temperature is not None else 1.0,
            name=str(d.path),
            operating_point=d.operating_point,
            val_threshold=checked_val_threshold(d.checkpoint.get("metrics")),
        )
        for d in loaded
    ]
    uncalibrated = [str(d.path) for d in loaded if d.temperature is None]
    if calibrated and uncalibrated:
        log.info("no fitted temperature in %s: its probabilities are raw", ", ".join(uncalibrated))
    return Ensemble(members, tta=tta, mean=mean, precision=precision)


@torch.no_grad()
def score_loader(
    ensemble: Ensemble, loader: Iterable, device: torch.device, which: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members `which` over a loader of (uint8 images, labels, indices): (labels, raw logits (M, N), indices).

    The logits are before temperatures (see `Ensemble.calibrated`), in loader order, read once at the end.
    """
    for i in range(len(ensemble.members)) if which is None else which:
        ensemble.members[i].model.eval()
    logits, labels, indices = [], [], []
    for images, y, index in paced(loader, ensemble.threads, units=lambda batch: len(batch[0])):
        logits.append(ensemble.raw_logits(images.to(device, non_blocking=True), which))
        labels.append(y)
        indices.append(index)
    if not logits:
        rows = len(ensemble.members) if which is None else len(which)
        return np.zeros(0, dtype=np.int64), np.zeros((rows, 0)), np.zeros(0, dtype=np.int64)
    return (
        torch.cat(labels).numpy(),
        torch.cat(logits, dim=1).double().cpu().numpy(),  # sync: one transfer per pass
        torch.cat(indices).numpy(),
    )


def clip_length_of(members: Sequence[LoadedDetector]) -> int:
    """The frames per clip the members take (1: images); an ensemble's members must agree, one loader feeds them."""
    lengths = {clip_length(m.model) for m in members}
    if len(lengths) > 1:
        raise UserError(
            "the ensemble mixes clip models and per-image models (frames per input: "
            + ", ".join(f"{m.path}: {clip_length(m.model)}" for m in members)
            + "); evaluate them separately"
        )
    return lengths.pop()
