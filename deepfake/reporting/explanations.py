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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake.data.samples import Sample
from deepfake.evaluation.explanations import (
    ExplainedFace,
    Explaining,
    grid_faces,
    set_faithfulness,
    set_features,
)
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


def explain_set(
    out: Path,
    name: str,
    members: Sequence[Any],
    tta: str,
    datasets: Mapping[int, Any],
    samples: Sequence[Sample],
    probs: np.ndarray,
    eval_cfg: Mapping[str, Any],
    device: torch.device,
    seed: int,
) -> dict[str, Any] | None:
    """`eval.explain` and `eval.embeddings` for one set (`datasets`: its test dataset per member input size):
    explain.png, the projector run; returns the faithfulness score for metrics.json and the table (None: no
    fake with a mask, or explanations off)."""
    scores = None
    if eval_cfg["explain"] != "none":
        size = max(datasets)  # crops read once, at the largest input size; each member resizes to its own
        how = Explaining(members, eval_cfg["explain"], None, tta, device)
        write_explain_grid(out, name, how, datasets[size], samples, probs, eval_cfg["threshold"],
                           eval_cfg["explain_faces"])  # fmt: skip
        scores = set_faithfulness(how, datasets[size], samples, size, eval_cfg["faithfulness_faces"], seed)
        if scores is not None:
            log.info("faithfulness of %s (%s, %d masked fakes): pointing game %.3f, heat in mask %.3f, chance %.3f",
                     name, how.method, scores["faces"], scores["pointing_game"], scores["heat_in_mask"],
                     scores["mask_area"])  # fmt: skip
    if eval_cfg["embeddings"]:
        first = members[0]  # an ensemble's features: its first member's
        write_embeddings(out, name, first.model, first.img_size, datasets[first.img_size], samples, probs,
                         eval_cfg["embedding_samples"], seed, device)  # fmt: skip
    return scores
