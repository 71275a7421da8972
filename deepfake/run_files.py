"""What a run writes besides checkpoints: metrics.json, hardware.json, val predictions and plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from deepfake.engine import TrainState
from deepfake.fileio import atomic_write
from deepfake.metrics import detection_metrics
from deepfake.predictions import VAL_PREDICTIONS, write_predictions

log = logging.getLogger("deepfake")


def write_hardware(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write(run_dir / "hardware.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))


def val_metrics(
    labels: np.ndarray, probs: np.ndarray, index: np.ndarray, videos: np.ndarray, prefix: str, cfg: DictConfig
) -> dict[str, float]:
    return detection_metrics(
        labels, probs, videos[index], prefix, cfg.eval.threshold, cfg.eval.video_aggregation
    )


def save_val_predictions(
    run_dir: Path, dataset: Any, pred: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """The best epoch's validation predictions, for its ROC plot (and any later analysis)."""
    labels, probs, index = pred
    samples = [dataset.samples[i] for i in index]
    write_predictions(
        run_dir / VAL_PREDICTIONS, [s.path for s in samples], [s.video for s in samples], labels, probs
    )


def write_plots(run_dir: Path) -> None:
    """Plots are a convenience: a failure is reported with the command to retry, the run still succeeds."""
    from deepfake.plot import plot_run  # matplotlib costs ~1 s to import: keep it off every start-up

    try:
        paths = plot_run(run_dir)
        log.info("plots: %s", ", ".join(str(p.relative_to(run_dir)) for p in paths))
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
    best: dict[str, Any],
    stop_reason: str,
    state: TrainState,
    duration: float,
) -> None:
    payload = {
        "monitor": cfg.training.monitor,
        "mode": cfg.training.monitor_mode,
        "best": best,
        "final": final,
        "stop_reason": stop_reason,
        "epochs_completed": state.epoch,
        "global_step": state.global_step,
        "duration_s": round(duration, 2),
    }
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=True)
    atomic_write(run_dir / "metrics.json", lambda f: f.write(text.encode()))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")
