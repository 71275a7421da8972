"""The explanation files of a test set, beside its metrics (`eval/<set>/`):

- `explain.png` (`eval.explain`): the most confidently wrong and right faces, each with its Grad-CAM overlay,
  probability and label; the same figure in TensorBoard (the run `<set>`, tag `explain`);
- `embeddings/` (`eval.embeddings`): a TensorBoard run whose Projector tab shows the pooled features of a seeded
  sample of the set, with thumbnails and the columns label, method, video and prob to colour by;
- `embeddings.png`: scikit-learn's t-SNE of the same sample, coloured by label and by method.

`tensorboard --logdir <run>/eval` opens both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake.data.samples import Sample
from deepfake.evaluation.explanations import ExplainedFace, Explaining, grid_faces, set_features
from deepfake.explain.embeddings import sample_indices, tsne_figure, write_projector
from deepfake.explain.grid import GridFace, grid_figure
from deepfake.explain.overlay import heat_overlay
from deepfake.reporting.figures import save_png
from deepfake.reporting.tensorboard import TensorBoardLogger

log = logging.getLogger("deepfake")


def _cells(faces: Sequence[ExplainedFace]) -> list[GridFace]:
    return [GridFace(heat_overlay(f.crop, f.heat), f.prob, f.label, f.name) for f in faces]


def write_explain_grid(
    out: Path,
    name: str,
    how: Explaining,
    dataset: Any,
    samples: Sequence[Sample],
    probs: np.ndarray,
    threshold: float,
    count: int,
) -> Path:
    """`out/explain.png` and its TensorBoard copy."""
    wrong, right = grid_faces(how, dataset, samples, probs, threshold, count)
    fig = grid_figure(_cells(wrong), _cells(right), f"{name} ({how.method})")
    save_png(fig, out / "explain.png")
    tb = TensorBoardLogger(out)
    tb.figure("explain", fig, 0)
    tb.close()
    log.info("explanations of %s: %s", name, out / "explain.png")
    return out / "explain.png"


def write_embeddings(
    out: Path,
    name: str,
    model: torch.nn.Module,
    img_size: int,
    dataset: Any,
    samples: Sequence[Sample],
    probs: np.ndarray,
    limit: int,
    seed: int,
    device: torch.device,
) -> Path:
    """`out/embeddings/` (the projector run) and `out/embeddings.png` (t-SNE) of a seeded sample of `limit`."""
    chosen = sample_indices(len(samples), limit, seed).tolist()
    features, thumbnails = set_features(model, img_size, dataset, chosen, device)
    picked = [samples[i] for i in chosen]
    metadata = [
        [s.label, s.method, s.video, f"{float(probs[i]):.4f}"] for s, i in zip(picked, chosen, strict=True)
    ]
    folder = write_projector(out / "embeddings", name, features, metadata, thumbnails)
    fig = tsne_figure(features, [s.label for s in picked], [s.method for s in picked], seed, name)
    save_png(fig, out / "embeddings.png")
    log.info("embeddings of %s: %d faces in %s (TensorBoard's Projector), %s", name, len(chosen), folder,
             out / "embeddings.png")  # fmt: skip
    return folder
