"""Score a detector on test sets: the metrics, files and table behind evaluate.py and train.py's last step.

Every set gets `eval/<set>/metrics.json`, `predictions.csv` (path, video, label, method, prob), `roc.png` and
`pr.png`; all metrics are computed from exactly the probabilities in predictions.csv, so anyone can recompute
them from that file. The cross-dataset protocol reports test sets only: nothing here picks a checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

from deepfake.config import to_config, validate
from deepfake.data.module import DataModule, resolve_num_workers
from deepfake.data.samples import Sample
from deepfake.detectors.temporal import clip_length
from deepfake.errors import UserError
from deepfake.evaluation.inference import load_detector, scoring_precision
from deepfake.evaluation.metrics import binary_metrics, bootstrap_auc_ci, method_metrics, video_scores
from deepfake.runs.fileio import atomic_write, require_writable
from deepfake.system.hardware import HardwareManager
from deepfake.system.precision import Precision
from deepfake.training.checkpoint import load_checkpoint, unwrap
from deepfake.training.engine import validate as predict_loader

log = logging.getLogger("deepfake")

PREDICTION_COLUMNS = ("path", "video", "label", "method", "prob")
FRAME_KEYS = ("auc", "ap", "eer", "acc", "balanced_acc", "loss")
VIDEO_KEYS = ("auc", "acc", "eer")


def set_report(
    samples: Sequence[Sample], probs: np.ndarray, eval_cfg: Mapping[str, Any], seed: int = 0
) -> dict:
    """Frame, video and per-method metrics of one set, with bootstrap intervals for frame and video AUC."""
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
    videos = [s.video for s in samples]
    threshold = float(eval_cfg["threshold"])
    frame = binary_metrics(labels, probs, threshold)
    v_labels, v_probs = video_scores(labels, probs, videos, eval_cfg["video_aggregation"])
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
        "video_aggregation": eval_cfg["video_aggregation"],
        "frame": {
            **{k: frame[k] for k in FRAME_KEYS},
            "auc_ci": bootstrap_auc_ci(labels, probs, videos, ci["samples"], ci["confidence"], seed),
        },
        "video": {
            **{k: video[k] for k in VIDEO_KEYS},
            "auc_ci": bootstrap_auc_ci(v_labels, v_probs, None, ci["samples"], ci["confidence"], seed),
        },
        "per_method": method_metrics(labels, probs, [s.method for s in samples], threshold),
        "bootstrap": {**ci, "resampled": "videos"},
    }


def write_set(out: Path, samples: Sequence[Sample], probs: np.ndarray, report: dict) -> None:
    """predictions.csv, metrics.json, roc.png and pr.png for one set, each written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for s, p in zip(samples, probs, strict=True):
        writer.writerow((s.path, s.video, s.label, s.method, float(p)))  # repr round-trips the float exactly
    atomic_write(out / "predictions.csv", lambda f: f.write(buffer.getvalue().encode()))
    text = json.dumps(report, indent=2, allow_nan=True)
    atomic_write(out / "metrics.json", lambda f: f.write(text.encode()))
    from deepfake.reporting.figures import (  # matplotlib: only when figures are due
        pr_figure,
        roc_figure,
        save_png,
    )

    labels = np.array([s.label for s in samples], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        log.warning("set %s holds one class only: no ROC or PR curve", report["set"])
        return
    v_labels, v_probs = video_scores(labels, probs, [s.video for s in samples], report["video_aggregation"])
    videos = (v_labels, v_probs) if len(v_labels) < len(labels) and len(np.unique(v_labels)) == 2 else None
    save_png(roc_figure((labels, probs), videos, title=f"ROC: {report['set']}"), out / "roc.png")
    save_png(pr_figure((labels, probs), videos, title=f"Precision-recall: {report['set']}"), out / "pr.png")


def evaluate_sets(
    model: torch.nn.Module,
    data: DataModule,
    names: Sequence[str],
    precision: Precision,
    device: torch.device,
    eval_cfg: Mapping[str, Any],
    out_dir: Path,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> dict[str, dict]:
    """Predict and report every named set of `data` (see `DataModule.setup_test_sets`) into `out_dir/<set>/`."""
    reports = {}
    for name in names:
        loader = data.test_dataloader(name)
        _, probs, index = predict_loader(model, loader, precision, device)
        samples = data.test_samples[name]
        ordered = np.empty(len(samples))
        ordered[index] = probs  # back to sample order, so predictions.csv follows the folder scan
        report = {"set": name, **(context or {}), **set_report(samples, ordered, eval_cfg, seed)}
        write_set(out_dir / name, samples, ordered, report)
        reports[name] = report
        log.info("evaluated %s: %d images -> %s", name, len(samples), out_dir / name)
    log.info("\n%s", results_table(reports))
    return reports


def results_table(reports: Mapping[str, dict]) -> str:
    """One plain-text table of all sets (frame metrics, AUC interval, video metrics)."""
    table = Table(title="Test sets (label 1 = fake)", box=box.MARKDOWN)
    for column in ("set", "images", "videos", "AUC", "AUC CI", "AP", "EER", "ACC", "bACC", "log loss"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for column in ("video AUC", "video ACC", "video EER"):
        table.add_column(column, justify="right")
    for name, r in reports.items():
        f, v = r["frame"], r["video"]
        table.add_row(
            name,
            str(r["counts"]["images"]),
            str(r["counts"]["videos"]),
            *(_fmt(f[k]) for k in ("auc",)),
            _fmt_ci(f["auc_ci"]),
            *(_fmt(f[k]) for k in ("ap", "eer", "acc", "balanced_acc", "loss")),
            *(_fmt(v[k]) for k in VIDEO_KEYS),
        )
    console = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False)
    console.print(table)
    return console.file.getvalue().rstrip()


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.4f}"


def _fmt_ci(ci: Sequence[float]) -> str:
    return "n/a" if any(math.isnan(c) for c in ci) else f"{ci[0]:.4f}-{ci[1]:.4f}"


def evaluate_best(
    run_dir: Path,
    model: torch.nn.Module,
    data: DataModule,
    names: Sequence[str],
    precision: Precision,
    device: torch.device,
    cfg: DictConfig,
) -> dict[str, dict]:
    """train.py's last step: load `best.pt` into the trained model and report `data.test_sets`."""
    best = run_dir / "checkpoints" / "best.pt"
    unwrap(model).load_state_dict(load_checkpoint(best, map_location=device)["model"])
    out_dir = Path(cfg.eval.out_dir) if cfg.eval.out_dir else run_dir / "eval"
    precision = scoring_precision(precision, cfg.training.amp)
    return evaluate_sets(
        model, data, names, precision, device, cfg.eval, out_dir, cfg.seed, context={"checkpoint": str(best)}
    )


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, dict]:
    """`evaluate.py`: score `cfg.checkpoint` on `data.test_sets` (or its training data's test split).

    The run config comes from the checkpoint; `overrides` (command-line `key=value` strings) name the keys
    taken from `cfg` instead. Hardware is always this machine's, and the test sets are those named now (the
    run's own `data.test_sets` were already scored by its last step).
    """
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise UserError("no checkpoint given: pass checkpoint=<run directory or .pt file>")
    loaded = load_detector(cfg.checkpoint)
    run_cfg = evaluation_config(loaded.config, cfg, overrides)
    out_dir = Path(run_cfg.eval.out_dir).expanduser() if run_cfg.eval.out_dir else loaded.run_dir / "eval"
    require_writable(out_dir, "the results folder", "pass eval.out_dir=<a writable folder>")
    hw = HardwareManager(**run_cfg.hardware)
    hw.configure(resolve_num_workers(run_cfg.data.num_workers))
    precision = scoring_precision(hw.precision(run_cfg.training.amp), run_cfg.training.amp)
    model = loaded.model.to(hw.device)
    data = instantiate(
        run_cfg.data,
        img_size=loaded.img_size,
        batch_size=run_cfg.training.batch_size,
        eval_batch_size=run_cfg.training.eval_batch_size,
        seed=run_cfg.seed,
        pin_memory=hw.device.type == "cuda",
        clip_frames=clip_length(model),
        _convert_="all",
    )
    names = data.setup_test_sets()
    log.info("evaluating %s on %s (%s, %s)", loaded.path, ", ".join(names), hw.device, precision.name)
    return evaluate_sets(
        model,
        data,
        names,
        precision,
        hw.device,
        run_cfg.eval,
        out_dir,
        run_cfg.seed,
        context={"checkpoint": str(loaded.path)},
    )


def evaluation_config(saved: DictConfig | None, cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The checkpoint's run config, with the overridden keys, `hardware` and `data.test_sets` taken from `cfg`."""
    current = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "checkpoint"}
    base = to_config(saved) if saved is not None else to_config(current)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete() or key == "checkpoint" or key.split(".")[0] == "hydra":
            continue
        OmegaConf.update(base, key, OmegaConf.select(cfg, key), merge=False)
    base.hardware = cfg.hardware
    base.data.test_sets = cfg.data.test_sets  # the sets named now; none = the training data's test split
    validate(base)
    return base
