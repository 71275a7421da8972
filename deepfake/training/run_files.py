"""What a run writes besides checkpoints (metrics.json, hardware.json, val predictions, plots) and its closing
lines (the best epoch, what to run next)."""

from __future__ import annotations

import json
import logging
import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from deepfake.evaluation.metrics import detection_metrics
from deepfake.evaluation.predictions import VAL_PREDICTIONS, write_predictions
from deepfake.evaluation.threshold import balanced_threshold
from deepfake.runs.fileio import atomic_write, copy_atomic
from deepfake.system.console import command_for
from deepfake.training.early_stopping import Best
from deepfake.training.engine import TrainState

log = logging.getLogger("deepfake")


def write_hardware(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write(run_dir / "hardware.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))


def val_metrics(
    labels: np.ndarray, probs: np.ndarray, index: np.ndarray, videos: np.ndarray, prefix: str, cfg: DictConfig
) -> dict[str, float]:
    """The epoch's validation metrics, and `<prefix>/threshold`: the probability of best balanced accuracy,
    which the checkpoints keep with their metrics and the test sets report an accuracy at."""
    out = detection_metrics(
        labels,
        probs,
        videos[index],
        prefix,
        cfg.eval.threshold,
        cfg.eval.video_aggregation,
        cfg.eval.video_topk,
    )
    out[f"{prefix}/threshold"] = balanced_threshold(labels, probs)
    return out


def save_val_predictions(
    run_dir: Path, dataset: Any, pred: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """The best epoch's validation predictions, for its ROC plot (and any later analysis)."""
    labels, probs, index = pred
    samples = [dataset.samples[i] for i in index]
    write_predictions(
        run_dir / VAL_PREDICTIONS, [s.path for s in samples], [s.video for s in samples], labels, probs
    )


def no_best_reason(monitor: str, labels: np.ndarray | None) -> str:
    """Why the monitored metric has no value: most often a validation split holding one class only."""
    if labels is None:
        return "no epoch was validated"
    fake = int(np.sum(labels == 1))
    real = len(labels) - fake
    if fake == 0 or real == 0:
        return (
            f"the validation split has {real} real and {fake} fake images; AUC, AP and EER need both classes. "
            "Add the missing class to the validation split, or monitor another metric (training.monitor=val/acc)"
        )
    return f"{monitor} was NaN; check the validation loss and predictions"


def warn_if_undefined(monitor: str, value: float, labels: np.ndarray, epoch: int) -> None:
    if math.isnan(value):
        log.warning(
            "epoch %d: %s is undefined (%s); this epoch cannot become the best",
            epoch, monitor, no_best_reason(monitor, labels),
        )  # fmt: skip


def log_best(monitor: str, best: Best, labels: np.ndarray | None, last: Path) -> None:
    """The run's closing word on selection: the best epoch, or why there is none (and so no best.pt)."""
    if best.epoch is None:
        log.warning(
            "no best epoch was selected, so there is no best.pt: %s was undefined (NaN) at every validation "
            "(%s). The last state is in %s",
            monitor, no_best_reason(monitor, labels), last,
        )  # fmt: skip
    else:
        log.info("best %s %.4f at epoch %s; checkpoints in %s", monitor, best.value, best.epoch, last.parent)


def log_next_steps(run_dir: Path) -> None:
    """The run's last lines: the exact commands that take its best.pt further."""
    run = shlex.quote(f"checkpoint={run_dir.resolve()}")
    log.info(
        "next, score it on other data: %s %s 'data.test_sets=[/path/to/faces]'", command_for("evaluate"), run
    )
    log.info("next, ask it about a video: %s %s input=/path/to/video.mp4", command_for("predict"), run)


def adopt_val_predictions(source: Path, run_dir: Path) -> None:
    """A run started from another run's best.pt keeps that best epoch's validation predictions."""
    src = source.parent.parent / VAL_PREDICTIONS
    if source.name == "best.pt" and src.is_file() and not (run_dir / VAL_PREDICTIONS).exists():
        copy_atomic(src, run_dir / VAL_PREDICTIONS)


def write_plots(run_dir: Path) -> None:
    """Plots are a convenience: a failure is reported with the command to retry, the run still succeeds."""
    from deepfake.reporting.plot import (
        plot_run,  # matplotlib costs ~1 s to import: keep it off every start-up
    )

    try:
        paths = set(plot_run(run_dir)) | set(
            (run_dir / "plots").glob("*.png")
        )  # + calibration's reliability.png
        log.info("plots: %s", ", ".join(sorted(str(p.relative_to(run_dir)) for p in paths)))
    except Exception as e:
        log.warning(
            "could not write plots (%s: %s); retry with: python -m deepfake.plot %s",
            type(e).__name__,
            e,
            run_dir,
        )


def write_metrics(
    run_dir: Path,
    cfg: DictConfig,
    final: dict[str, float],
    best: Best,
    stop_reason: str,
    state: TrainState,
    duration: float,
    calibration: dict[str, Any] | None = None,
    operating_point: dict[str, Any] | None = None,
    code: dict[str, Any] | None = None,
) -> None:
    payload = {
        "monitor": cfg.training.monitor,
        "mode": cfg.training.monitor_mode,
        "best": best.state_dict(),
        "final": final,
        "stop_reason": stop_reason,
        "epochs_completed": state.epoch,
        "global_step": state.global_step,
        "duration_s": round(duration, 2),
    }
    if code:  # the git commit the run's code came from, and whether the checkout had uncommitted changes
        payload["code"] = code
    if calibration is not None:  # best.pt's temperature and the validation log loss and ECE before/after it
        payload["calibration"] = calibration
    if operating_point is not None:  # best.pt's threshold for eval.target_fpr and its validation FPR and TPR
        payload["operating_point"] = operating_point
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False)
    atomic_write(run_dir / "metrics.json", lambda f: f.write(text.encode()))


def json_safe(x: Any) -> Any:
    """Plain JSON values: NumPy scalars as Python ones, NaN and infinities (an undefined metric) as null,
    since bare `NaN` is not JSON and breaks every strict reader."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
