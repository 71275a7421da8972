"""A thin TensorBoard writer: scalars keyed by optimizer step, text, hparams, curves, figures, images.

Every method is a no-op when disabled (TensorBoard off, or a process other than rank 0), so callers never
branch on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.utils import make_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# TensorBoard (its plugins and protobufs) is imported when a writer is made, not with this module: a run with
# logging.tensorboard=false, and every other command that imports the runner, never pays for it.


class TensorBoardLogger:
    """Writes into the run directory itself, so `tensorboard --logdir multirun/<sweep>` sees one run per job."""

    def __init__(self, log_dir: str | Path, enabled: bool = True, purge_step: int | None = None) -> None:
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step) if enabled else None

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        """Record hyperparameters in this run, not a sub-run (what `SummaryWriter.add_hparams` would make).

        As Lightning does: the experiment, session-start and session-end summaries go to the main file
        writer, and the HParams tab reads each metric as the last value of the scalar with that tag here,
        so the table fills in as training logs `metric_tags`.
        """
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        experiment, start, end = hparams(dict(params), {tag: 0.0 for tag in metric_tags})
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)

    def pr_curve(self, tag: str, labels: np.ndarray, probs: np.ndarray, step: int) -> None:
        """Precision-recall curve with fake (label 1) as the positive class."""
        if self.writer is not None and len(labels):
            self.writer.add_pr_curve(tag, np.asarray(labels).astype(bool), np.asarray(probs), step)

    def figure(self, tag: str, figure: Figure, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, figure, step, close=False)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A uint8 (H, W, 3) picture already drawn (a captioned grid)."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        """A grid of uint8 (N, 3, H, W) images, shown as they entered the model (before normalisation)."""
        if self.writer is not None and len(images):
            self.writer.add_image(tag, make_grid(images, nrow=nrow, padding=2), step)

    def custom_scalars(self, layout: dict[str, dict[str, list]]) -> None:
        if self.writer is not None:
            self.writer.add_custom_scalars(layout)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
