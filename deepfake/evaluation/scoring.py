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
from deepfake.errors import UserError
from deepfake.evaluation.aggregate import TOPK
from deepfake.evaluation.calibration import checked_temperature, expected_calibration_error
from deepfake.evaluation.ensemble import (
    Ensemble,
    Member,
    checkpoint_list,
    clip_length_of,
    ensemble_of,
    score_loader,
)
from deepfake.evaluation.inference import load_detector, scoring_precision
from deepfake.evaluation.metrics import binary_metrics, bootstrap_auc_ci, method_metrics, video_scores
from deepfake.runs.fileio import atomic_write, require_writable
from deepfake.system.hardware import HardwareManager
from deepfake.system.precision import Precision
from deepfake.training.checkpoint import load_checkpoint, unwrap

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
        "video_aggregation": eval_cfg["video_aggregation"],
        "video_topk": int(eval_cfg.get("video_topk", TOPK)),
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


def write_set(
    out: Path, samples: Sequence[Sample], probs: np.ndarray, report: dict, raw: np.ndarray | None = None
) -> None:
    """predictions.csv, metrics.json, roc.png, pr.png and reliability.png (`raw` probabilities against the
    calibrated `probs`, when a temperature applies) for one set, each written atomically."""
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
        reliability_figure,
        roc_figure,
        save_png,
    )

    labels = np.array([s.label for s in samples], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        log.warning("set %s holds one class only: no ROC or PR curve", report["set"])
        return
    v_labels, v_probs = video_scores(
        labels, probs, [s.video for s in samples], report["video_aggregation"], report.get("video_topk", TOPK)
    )
    videos = (v_labels, v_probs) if len(v_labels) < len(labels) and len(np.unique(v_labels)) == 2 else None
    save_png(roc_figure((labels, probs), videos, title=f"ROC: {report['set']}"), out / "roc.png")
    save_png(pr_figure((labels, probs), videos, title=f"Precision-recall: {report['set']}"), out / "pr.png")
    curves = {"raw": raw, "calibrated": probs} if raw is not None else {"predicted": probs}
    save_png(reliability_figure(labels, curves, f"Reliability: {report['set']}"), out / "reliability.png")


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
    report = set_report(samples, probs, eval_cfg, seed)
    report["calibration"] = {
        "applied": bool(eval_cfg["calibrated"]),
        "temperature": ensemble.temperatures[0] if len(ensemble.members) == 1 else ensemble.temperatures,
        "raw": probability_metrics(labels, raw_probs),
        "calibrated": probability_metrics(labels, ensemble.combine(torch.from_numpy(calibrated)).numpy()),
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


def evaluate_sets(
    ensemble: Ensemble,
    data: Mapping[int, DataModule],
    names: Sequence[str],
    device: torch.device,
    eval_cfg: Mapping[str, Any],
    out_dir: Path,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> dict[str, dict]:
    """Predict and report every named set (see `DataModule.setup_test_sets`) into `out_dir/<set>/`.

    `data` holds one DataModule per member input size (`Ensemble.groups`), all over the same test sets.
    """
    reports = {}
    first = next(iter(data.values()))
    for name in names:
        samples = first.test_samples[name]
        for other in data.values():
            if [s.path for s in other.test_samples[name]] != [s.path for s in samples]:
                raise UserError(f"test set {name} lists different images at different input sizes")
        loaders = {size: module.test_dataloader(name) for size, module in data.items()}
        raw = set_logits(ensemble, loaders, samples, device)
        probs, raw_probs, report = scored_report(ensemble, raw, samples, eval_cfg, seed)
        report = {"set": name, **(context or {}), **report}
        write_set(out_dir / name, samples, probs, report, raw_probs if eval_cfg["calibrated"] else None)
        reports[name] = report
        log.info("evaluated %s: %d images -> %s", name, len(samples), out_dir / name)
    log.info("\n%s", results_table(reports))
    return reports


def results_table(reports: Mapping[str, dict]) -> str:
    """One plain-text table of all sets (frame metrics, AUC interval, calibration, video metrics); an
    ensemble's members get a row each (`<set> #k`) above the ensemble's row, and a legend of checkpoints."""
    table = Table(title="Test sets (label 1 = fake)", box=box.MARKDOWN)
    columns = ("set", "images", "videos", "AUC", "AUC CI", "AP", "EER", "ACC", "bACC", "log loss")
    for column in (*columns, "LL raw", "LL cal", "ECE raw", "ECE cal", "video AUC", "video ACC", "video EER"):
        table.add_column(column, justify="left" if column == "set" else "right")
    legend: dict[str, str] = {}
    for name, r in reports.items():
        rows = [(f"{name} #{k + 1}", m) for k, m in enumerate(r.get("members", []))]
        legend.update({f"#{k + 1}": m["checkpoint"] for k, m in enumerate(r.get("members", []))})
        for label, entry in [*rows, (f"{name} ensemble" if rows else name, r)]:
            f, v, c = entry["frame"], entry["video"], entry["calibration"]
            table.add_row(
                label,
                str(r["counts"]["images"]),
                str(r["counts"]["videos"]),
                _fmt(f["auc"]),
                _fmt_ci(f["auc_ci"]),
                *(_fmt(f[k]) for k in ("ap", "eer", "acc", "balanced_acc", "loss")),
                *(_fmt(c[when][k]) for k in ("log_loss", "ece") for when in ("raw", "calibrated")),
                *(_fmt(v[k]) for k in VIDEO_KEYS),
            )
    console = Console(file=io.StringIO(), width=220, color_system=None, force_terminal=False)
    console.print(table)
    for key, path in legend.items():
        console.print(f"{key}: {path}")
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
    """train.py's last step: load `best.pt` (weights and fitted temperature) into the trained model and
    report `data.test_sets`."""
    best = run_dir / "checkpoints" / "best.pt"
    state = load_checkpoint(best, map_location=device)
    bare = unwrap(model)
    bare.load_state_dict(state["model"])
    temperature = checked_temperature(str(best), state.get("calibration")) if cfg.eval.calibrated else None
    member = Member(model=bare, img_size=int(bare.img_size), temperature=temperature or 1.0, name=str(best))
    ensemble = Ensemble([member], tta=cfg.eval.tta, precision=scoring_precision(precision, cfg.training.amp))
    out_dir = Path(cfg.eval.out_dir) if cfg.eval.out_dir else run_dir / "eval"
    return evaluate_sets(
        ensemble,
        {member.img_size: data},
        names,
        device,
        cfg.eval,
        out_dir,
        cfg.seed,
        {"checkpoint": str(best)},
    )


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, dict]:
    """`evaluate.py`: score `cfg.checkpoint` (one, or a list: an ensemble) on `data.test_sets` (or the first
    checkpoint's training data's test split).

    The run config comes from the first checkpoint; `overrides` (command-line `key=value` strings) name the keys
    taken from `cfg` instead. Hardware is always this machine's, and the test sets are those named now (the
    run's own `data.test_sets` were already scored by its last step). Each member keeps its own input size and
    normalisation: the images are decoded once per distinct size.
    """
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise UserError("no checkpoint given: pass checkpoint=<run directory or .pt file>")
    paths = checkpoint_list(cfg.checkpoint)
    loaded = [load_detector(path) for path in paths]  # every member's file checked before any work
    first = loaded[0]
    run_cfg = evaluation_config(first.config, cfg, overrides)
    out_dir = Path(run_cfg.eval.out_dir).expanduser() if run_cfg.eval.out_dir else first.run_dir / "eval"
    require_writable(out_dir, "the results folder", "pass eval.out_dir=<a writable folder>")
    hw = HardwareManager(**run_cfg.hardware)
    hw.configure(resolve_num_workers(run_cfg.data.num_workers), unit="batch", per="image")
    precision = scoring_precision(hw.precision(run_cfg.training.amp), run_cfg.training.amp)
    clip = clip_length_of(loaded)
    ensemble = ensemble_of(
        loaded, hw.device, precision, run_cfg.eval.tta, cfg.ensemble.mean, run_cfg.eval.calibrated
    )
    ensemble.threads = hw.threads  # the first set's first batches time the thread counts
    data = {
        size: instantiate(
            run_cfg.data,
            img_size=size,
            batch_size=run_cfg.training.batch_size,
            eval_batch_size=run_cfg.training.eval_batch_size,
            seed=run_cfg.seed,
            pin_memory=hw.device.type == "cuda",
            clip_frames=clip,
            _convert_="all",
        )
        for size in ensemble.groups()
    }
    names = {size: module.setup_test_sets() for size, module in data.items()}[ensemble.members[0].img_size]
    log.info("evaluating %s on %s (%s, %s)", ", ".join(paths), ", ".join(names), hw.device, precision.name)
    context = (
        {"checkpoint": str(loaded[0].path)}
        if len(loaded) == 1
        else {"checkpoints": [str(d.path) for d in loaded]}
    )
    return evaluate_sets(ensemble, data, names, hw.device, run_cfg.eval, out_dir, run_cfg.seed, context)


def evaluation_config(saved: DictConfig | None, cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The checkpoint's run config, with the overridden keys, `hardware` and `data.test_sets` taken from `cfg`."""
    own = ("checkpoint", "ensemble")  # evaluate.py's keys, not a training run's
    current = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in own}
    base = to_config(saved) if saved is not None else to_config(current)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0] in ("checkpoint", "ensemble", "hydra"):
            continue
        OmegaConf.update(base, key, OmegaConf.select(cfg, key), merge=False)
    base.hardware = cfg.hardware
    base.data.test_sets = cfg.data.test_sets  # the sets named now; none = the training data's test split
    validate(base)
    return base
