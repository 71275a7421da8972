"""The numbers of a robustness evaluation: one row per perturbation setting of a test set, and their means.

A row is what `<set>/robustness.csv` holds: type, level, param, frame_auc, video_auc, ap, eer, n (AP and EER
are frame-level; the video AUC aggregates frames with `eval.video_aggregation`, as the set's own metrics do).
The `clean` row (type clean, level 0) is the set's ordinary result; the means leave it out. Papers quote the
video-level AUC (LipForensics, RealForensics), so the summary's headline is its mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepfake.data.samples import Sample
from deepfake.evaluation.aggregate import TOPK
from deepfake.evaluation.metrics import binary_metrics, video_scores
from deepfake.perturbations.protocol import CLEAN, Setting

COLUMNS = ("type", "level", "param", "frame_auc", "video_auc", "ap", "eer", "n")
AUCS = ("frame_auc", "video_auc")


def setting_row(
    setting: Setting, samples: Sequence[Sample], probs: np.ndarray, eval_cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """One robustness.csv row from the probabilities of `samples` under `setting`."""
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    threshold = float(eval_cfg["threshold"])
    frame = binary_metrics(labels, probs, threshold)
    v_labels, v_probs = video_scores(
        labels,
        probs,
        [s.video for s in samples],
        eval_cfg["video_aggregation"],
        int(eval_cfg.get("video_topk", TOPK)),
    )
    video = binary_metrics(v_labels, v_probs, threshold)
    return {
        "type": setting.type,
        "level": setting.level,
        "param": setting.param,
        "frame_auc": frame["auc"],
        "video_auc": video["auc"],
        "ap": frame["ap"],
        "eer": frame["eer"],
        "n": len(samples),
    }


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The clean AUCs, each type's mean AUC over its levels, and the mean over every perturbed row."""
    perturbed = [r for r in rows if r["type"] != CLEAN]
    clean = next((r for r in rows if r["type"] == CLEAN), None)
    types = list(dict.fromkeys(r["type"] for r in perturbed))
    return {
        "clean": {k: clean[k] for k in AUCS} if clean else None,
        "per_type": {t: {k: _mean([r[k] for r in perturbed if r["type"] == t]) for k in AUCS} for t in types},
        "mean": {k: _mean([r[k] for r in perturbed]) for k in AUCS},
        "levels": sorted({int(r["level"]) for r in perturbed}),
    }
