"""Run plots as PNGs under `<run dir>/plots/`: loss curves, validation-metric curves, ROC of the best epoch.

Written at the end of training and on demand: `python -m deepfake.plot <run dir>`. Curves come from the
run's TensorBoard events (or its metrics.csv under `logger=csv`), the ROC from `val_predictions.csv` (saved whenever best.pt is). Figures are drawn
on matplotlib's Agg canvas without pyplot, so nothing needs a display and no global state is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from deepfake.errors import UserError
from deepfake.evaluation.metrics import binary_metrics, video_scores
from deepfake.evaluation.predictions import VAL_PREDICTIONS, read_predictions
from deepfake.exits import run_reporting_errors
from deepfake.reporting.facts import is_number
from deepfake.reporting.figures import curve_title
from deepfake.reporting.run_facts import read_json, read_run
from deepfake.tracking.csv_tracker import FILE as CSV_FILE
from deepfake.tracking.csv_tracker import read_scalars

log = logging.getLogger("deepfake.plot")  # the name train.log has always shown

LOSS_TAGS = ("train/loss", "train/epoch_loss", "val/loss")
METRIC_TAGS = ("val/auc", "val/ap", "val/acc", "val/eer", "val/video_auc", "val_ema/auc")
Series = dict[str, tuple[np.ndarray, np.ndarray]]


def load_scalars(run_dir: Path) -> Series:
    """Every scalar tag in the run's event files as (steps, values), keeping all points (no reservoir); a run
    without TensorBoard (`logger=csv`) is read from its metrics.csv instead.

    A resumed run appends a new events file and may rewrite steps; files are read in order, the latest wins.
    """
    points: dict[str, dict[int, float]] = {}
    events = sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not events and (run_dir / CSV_FILE).is_file():
        points = read_scalars(run_dir / CSV_FILE)
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            points.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    out: Series = {}
    for tag, by_step in points.items():
        steps = np.array(sorted(by_step))
        out[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


def _curves(
    series: Series,
    tags: tuple[str, ...],
    title: str,
    ylabel: str,
    path: Path,
    best_step: int | None = None,
) -> Path | None:
    present = [t for t in tags if t in series]
    if not present:
        return None
    fig = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for tag in present:
        steps, values = series[tag]
        dense = len(steps) > 30  # per-log-step curves as lines, per-epoch points with markers
        ax.plot(steps, values, label=tag, linewidth=1.0 if dense else 1.5, marker=None if dense else "o")
    if best_step is not None:
        ax.axvline(
            best_step, color="grey", linestyle="--", linewidth=1.0, label=f"best epoch (step {best_step})"
        )
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes: never over a curve
    fig.savefig(path)
    return path


def loss_labels(config: dict) -> tuple[str, str]:
    """The loss plot's title and y label; a mask-head run's training loss includes the mask term."""
    model, training = config.get("model") or {}, config.get("training") or {}
    if not model.get("mask_head"):
        return "loss", "binary cross-entropy"
    term = f"{training.get('mask_loss_weight', 1.0)} x mask {training.get('mask_loss', 'bce')} loss"
    return (
        f"loss (train/loss includes the mask term: BCE + {term}; val/loss is BCE only)",
        f"train: BCE + {term}; val: BCE",
    )


def _roc(pred_path: Path, title: str, path: Path, point: dict | None = None) -> Path:
    pred = read_predictions(pred_path)
    labels, probs = pred["label"], pred["prob"]
    if len(np.unique(labels)) < 2:
        raise UserError(f"{pred_path} holds one class only; a ROC curve needs real and fake images")
    fig = Figure(figsize=(6, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    curves = [("frame", labels, probs)]
    v_labels, v_probs = video_scores(labels, probs, pred["video"])
    title = curve_title(title, "validation", labels, len(v_labels) if len(v_labels) < len(labels) else None)
    if len(v_labels) < len(labels) and len(np.unique(v_labels)) == 2:
        curves.append(("video (mean prob.)", v_labels, v_probs))
    for name, y, p in curves:
        fpr, tpr, _ = roc_curve(y, p)
        m = binary_metrics(y, p)
        ax.plot(fpr, tpr, label=f"{name}: AUC {m['auc']:.4f}, EER {m['eer']:.3f}")
        ax.plot(
            [m["eer"]], [1.0 - m["eer"]], "o", color=ax.lines[-1].get_color()
        )  # where it crosses FNR = FPR
    if point is not None and is_number(point.get("fpr")) and is_number(point.get("tpr")):
        ax.plot([point["fpr"]], [point["tpr"]], "*", color="black", markersize=11,
                label=f"threshold for FPR <= {point.get('target_fpr')}: FPR {point['fpr']:.3f}, TPR {point['tpr']:.3f}")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="chance (AUC 0.5)")
    ax.plot([0, 1], [1, 0], ":", color="grey", linewidth=0.8, label="EER line (FPR = 1 - TPR)")
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)")
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path)
    return path


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write every plot the run's files allow; raise UserError when there is nothing to plot."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass <base_path>/outputs/<date>/<time>")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    series = load_scalars(run_dir)
    best = _best_step(run_dir, series)
    loss_title, loss_label = loss_labels(read_run(run_dir).config)
    written = [
        _curves(series, LOSS_TAGS, loss_title, loss_label, out_dir / "loss.png", best),
        _curves(series, METRIC_TAGS, "validation metrics", "value", out_dir / "val_metrics.png", best),
    ]
    pred_path = run_dir / VAL_PREDICTIONS
    if pred_path.is_file():
        point = read_json(run_dir / "metrics.json").get("operating_point")  # best.pt's validation threshold
        written.append(_roc(pred_path, _roc_title(run_dir), out_dir / "roc.png", point))
    paths = [p for p in written if p is not None]
    if not paths:
        curves = (
            "no curves yet (the run stopped before its first logged step)"
            if any(run_dir.glob("events.out.tfevents.*")) or (run_dir / CSV_FILE).is_file()
            else f"no TensorBoard events or {CSV_FILE} (a logger without tensorboard or csv, or logging.tensorboard=false)"
        )
        raise UserError(
            f"nothing to plot in {run_dir}: {curves} and no {VAL_PREDICTIONS} (written when a run saves best.pt)"
        )
    return paths


def _best_step(run_dir: Path, series: Series) -> int | None:
    """The optimizer step of the best epoch: where the monitored curve reaches metrics.json's best value."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        steps, values = series[metrics["monitor"]]
        best = float(metrics["best"]["value"])
        if not np.isfinite(best):
            return None
        return int(steps[int(np.nanargmin(np.abs(values - best)))])
    except (OSError, ValueError, KeyError, TypeError):  # no metrics.json yet, or no curve for the monitor
        return None


def _roc_title(run_dir: Path) -> str:
    try:
        best = json.loads((run_dir / "metrics.json").read_text())["best"]
        return f"ROC, best epoch {best['epoch']}"
    except (OSError, ValueError, KeyError):  # a run still in progress has no metrics.json yet
        return "ROC, best epoch so far"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfake.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (<base_path>/outputs/<date>/<time> or a sweep job)")
    args = parser.parse_args(argv)
    for path in run_reporting_errors(plot_run, args.run_dir):
        print(path)


if __name__ == "__main__":
    main()
