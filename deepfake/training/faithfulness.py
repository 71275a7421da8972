"""`eval.explain` with `data.fake_synthesis=sbi`: does the detector look where the blend is, epoch by epoch?

The validation split holds no known masks, so its first `eval.faithfulness_faces` real faces are self-blended
here, each with a generator seeded by its index (the same fakes every epoch, as the mask head's previews), and
each validation also explains them and scores the heatmaps against their blend masks
(`deepfake.explain.faithfulness`): `val/pointing_game`, `val/heat_in_mask` and the chance level `val/mask_area`
join the epoch's validation metrics, in TensorBoard and metrics.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from deepfake.data.sbi import sbi_examples
from deepfake.explain.cam import explain_crops, require_gradcam
from deepfake.explain.faithfulness import faithfulness
from deepfake.explain.target import cam_target

log = logging.getLogger("deepfake")

KEYS = ("pointing_game", "heat_in_mask", "mask_area")


@dataclass
class _Member:
    model: nn.Module
    img_size: int


class SbiFaithfulness:
    """The fixed SBI fakes of a validation set and the score of a model's heatmaps on them."""

    def __init__(self, dataset: Any, method: str, count: int, batch_size: int) -> None:
        self.dataset, self.method, self.count, self.batch_size = dataset, method, count, batch_size
        self.examples: tuple[torch.Tensor, torch.Tensor] | None = None  # blended at the first validation

    def fakes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, 3, S, S) SBI fakes of the first validation reals and their masks (N, S, S)."""
        if self.examples is None:
            self.examples = sbi_examples(self.dataset, self.count)
            log.info(
                "explanations: %s of %d SBI fakes of validation faces each epoch",
                self.method,
                len(self.examples[0]),
            )
        return self.examples

    @classmethod
    def from_config(cls, cfg: DictConfig, dataset: Any, model: nn.Module) -> SbiFaithfulness | None:
        """The score when `eval.explain` is on and training blends SBI fakes. With `eval.explain` on, grad-cam and
        the layer are checked now in any case: the test sets are explained after the last epoch."""
        if cfg.eval.explain == "none":
            return None
        require_gradcam("eval.explain")
        cam_target(model, None, "model.explain_layer")  # the model's own explain_layer, else the family's
        if cfg.data.fake_synthesis != "sbi" or cfg.eval.faithfulness_faces == 0:
            return None
        return cls(dataset, cfg.eval.explain, cfg.eval.faithfulness_faces, cfg.training.batch_size)

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        images, masks = self.fakes()
        heats = explain_crops(
            [_Member(model, int(model.img_size))], images.to(device), self.method,
            key="model.explain_layer", batch_size=self.batch_size,
        )  # fmt: skip
        scores = faithfulness(list(heats), list(masks.numpy()))
        return {f"val/{k}": float(scores[k]) for k in KEYS}
