"""The numbers of a test set: frame, video and per-method metrics with bootstrap intervals, an ensemble's
logits and its members' reports, and log loss and ECE before and after the temperatures.

Pure scoring, no files: `deepfake.reporting.eval_sets` writes them (predictions.csv, metrics.json, figures)
for evaluate.py and train.py's last step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from deepfake.data.samples import Sample
from deepfake.evaluation.aggregate import TOPK
from deepfake.evaluation.calibration import expected_calibration_error
from deepfake.evaluation.ensemble import Ensemble, Member, score_loader
from deepfake.evaluation.metrics import binary_metrics, bootstrap_auc_ci, tpr_at_fpr, video_scores
from deepfake.evaluation.operating_point import measured_at, threshold_of
from deepfake.evaluation.per_method import per_method_metrics
from deepfake.evaluation.threshold import reported_threshold

PREDICTION_COLUMNS = ("path", "video", "label", "method", "prob")
FRAME_KEYS = ("auc", "ap", "eer", "acc", "balanced_acc", "loss")
VIDEO_KEYS = ("auc", "acc", "eer")


def set_report(
    samples: Sequence[Sample],
    probs: np.ndarray,
    eval_cfg: Mapping[str, Any],
    seed: int = 0,
    val_threshold: float | None = None,
) -> dict:
    """Frame, video and per-method metrics of one set, with bootstrap intervals for frame and video AUC; with
    `val_threshold` (on these probabilities) also the accuracies at the threshold chosen on validation."""
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    videos = [s.video for s in samples]
    threshold = float(eval_cfg["threshold"])
    topk = int(eval_cfg.get("video_topk", TOPK))
    frame = binary_metrics(labels, probs, threshold)
    at_val = binary_metrics(labels, probs, val_threshold)["acc"] if val_threshold is not None else None
    methods = per_method_metrics(
        labels, probs, [s.method for s in samples], videos, threshold, val_threshold,
        eval_cfg["video_aggregation"], topk,
    )  # fmt: skip
    v_labels, v_probs = video_scores(
        labels, probs, videos, eval_cfg["video_aggregation"], int(eval_cfg.get("video_topk", TOPK))
    )
    video = binary_metrics(v_labels, v_probs, threshold)
    ci = {
        "samples": int(eval_cfg["bootstrap_samples"]),
        "confidence": float(eval_cfg["confidence"]),
        "seed": seed,
    }
    return {
        "counts": {
            "images": len(samples),
            "real": int((labels == 0).sum()),
            "fake": int(labels.sum()),
            "videos": len(v_labels),
        },
        "threshold": threshold,
        "val_threshold": val_threshold,
        "video_aggregation": eval_cfg["video_aggregation"],
        "video_topk": int(eval_cfg.get("video_topk", TOPK)),
        "frame": {
            **{k: frame[k] for k in FRAME_KEYS},
            "acc_at_val_threshold": at_val,
            "auc_ci": bootstrap_auc_ci(labels, probs, videos, ci["samples"], ci["confidence"], seed),
            "tpr_at_fpr": tpr_at_fpr(labels, probs),
        },
        "video": {
            **{k: video[k] for k in VIDEO_KEYS},
            "auc_ci": bootstrap_auc_ci(v_labels, v_probs, None, ci["samples"], ci["confidence"], seed),
            "tpr_at_fpr": tpr_at_fpr(v_labels, v_probs),
        },
        "per_method": methods,
        "bootstrap": {**ci, "resampled": "videos"},
    }


def set_logits(
    ensemble: Ensemble, loaders: Mapping[int, Any], samples: Sequence[Sample], device: torch.device
) -> np.ndarray:
    """Every member's raw logits (M, N) in sample order; members of one input size share one loader pass."""
    raw = np.empty((len(ensemble.members), len(samples)))
    for size, which in ensemble.groups().items():
        _, logits, index = score_loader(ensemble, loaders[size], device, which)
        for row, member in enumerate(which):
            raw[member, index] = logits[
                row
            ]  # back to sample order, so predictions.csv follows the folder scan
    return raw


def reported_probs(ensemble: Ensemble, raw: np.ndarray, calibrated: bool) -> np.ndarray:
    """The ensemble's probabilities from its members' raw logits, after their temperatures if `calibrated`."""
    use = ensemble.calibrated(torch.from_numpy(raw)) if calibrated else torch.from_numpy(raw)
    return ensemble.combine(use).numpy()


def scored_report(
    ensemble: Ensemble, raw: np.ndarray, samples: Sequence[Sample], eval_cfg: Mapping[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(reported probs, raw probs, report): the ensemble's (or single model's) metrics on the calibrated
    probabilities (raw with `eval.calibrated=false`), log loss and ECE before and after the temperatures, and
    with several members each member's frame and video metrics beside the ensemble's."""
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    calibrated = ensemble.calibrated(torch.from_numpy(raw)).numpy()
    use = calibrated if eval_cfg["calibrated"] else raw
    probs = ensemble.combine(torch.from_numpy(use)).numpy()
    raw_probs = ensemble.combine(torch.from_numpy(raw)).numpy()
    single = ensemble.members[0] if len(ensemble.members) == 1 else None  # an ensemble has no val threshold
    at_val = None
    if single is not None:
        at_val = reported_threshold(
            single.val_threshold, single.temperature if eval_cfg["calibrated"] else 1.0
        )
    report = set_report(samples, probs, eval_cfg, seed, at_val)
    report["calibration"] = {
        "applied": bool(eval_cfg["calibrated"]),
        "temperature": ensemble.temperatures[0] if len(ensemble.members) == 1 else ensemble.temperatures,
        "raw": probability_metrics(labels, raw_probs),
        "calibrated": probability_metrics(labels, ensemble.combine(torch.from_numpy(calibrated)).numpy()),
    }
    point = ensemble.members[0].operating_point if len(ensemble.members) == 1 else None
    if point is not None:  # the test set's FPR and TPR at the threshold chosen on validation: a measurement
        temperature = ensemble.members[0].temperature if eval_cfg["calibrated"] else None
        report["operating_point"] = {
            "target_fpr": point["target_fpr"],
            "chosen_on": "validation",
            "validation": {k: point.get(k) for k in ("fpr", "tpr", "images")},
            **measured_at(labels, probs, threshold_of(point, temperature)),
        }
    if len(ensemble.members) > 1:
        report["ensemble"] = {"members": len(ensemble.members), "mean": ensemble.mean, "tta": ensemble.tta}
        report["members"] = [
            member_report(member, samples, raw[i], calibrated[i], use[i], eval_cfg, seed)
            for i, member in enumerate(ensemble.members)
        ]
    return probs, raw_probs, report


def member_report(
    member: Member,
    samples: Sequence[Sample],
    raw: np.ndarray,
    calibrated: np.ndarray,
    use: np.ndarray,
    eval_cfg: Mapping[str, Any],
    seed: int,
) -> dict:
    """One ensemble member's frame and video metrics and calibration, as its single evaluation reports them."""
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    single = set_report(samples, 1.0 / (1.0 + np.exp(-use)), eval_cfg, seed)
    return {
        "checkpoint": member.name,
        "img_size": member.img_size,
        "frame": single["frame"],
        "video": single["video"],
        "calibration": {
            "temperature": member.temperature,
            "raw": probability_metrics(labels, 1.0 / (1.0 + np.exp(-raw))),
            "calibrated": probability_metrics(labels, 1.0 / (1.0 + np.exp(-calibrated))),
        },
    }


def probability_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Log loss (probabilities clipped as in the frame metrics) and ECE with 15 bins."""
    loss = binary_metrics(labels, probs)["loss"]
    return {"log_loss": loss, "ece": expected_calibration_error(labels, probs)}
