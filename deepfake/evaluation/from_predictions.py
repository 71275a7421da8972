"""evaluate.py's metrics from a predict.py output: `python -m deepfake.evaluation.from_predictions preds.jsonl`.

predict.py scores a manifest (extract.py's `manifest.csv`, or any `data=manifest` file) with its label, video
and method carried into each row; this command turns those rows into the numbers evaluate.py reports for a test
set (`scoring.set_report`: frame AUC, AP, EER, ACC, balanced ACC, log loss with a bootstrap interval that
resamples videos; video metrics through the same aggregation rules; per-method ACC and AUC) plus log loss and
ECE of the probabilities, written to `<predictions stem>.metrics.json` and printed. Any of predict.py's formats
is read (.csv, .jsonl, .parquet, .json), a journal still being written included: its torn last row is skipped.
Rows without a probability (errors; no face with no_face_prob=null) or a label are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepfake.choices import VIDEO_AGGREGATION
from deepfake.data.manifest import parse_label
from deepfake.data.samples import Sample
from deepfake.errors import UserError
from deepfake.evaluation.aggregate import TOPK
from deepfake.evaluation.scoring import probability_metrics, set_report
from deepfake.exits import run_reporting_errors
from deepfake.runs.fileio import atomic_write
from deepfake.runs.rowfiles import kind_of, read_document

log = logging.getLogger("deepfake")


def labelled(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Sample], np.ndarray, Counter[str]]:
    """Samples (label, video, method, split) and probabilities of the rows that have both; counts of the rest."""
    samples: list[Sample] = []
    probs: list[float] = []
    left: Counter[str] = Counter()
    for row in rows:
        prob, label = row.get("prob"), row.get("label")
        if label is None or label == "":
            left["no label"] += 1
            continue
        if prob is None or prob == "":
            left[f"no probability ({row.get('status')})"] += 1
            continue
        label = label if isinstance(label, int) else parse_label(str(label))
        video = row.get("video") or row["path"]  # without a video column each row is its own video
        method = row.get("method") or ("fake" if label else "real")
        samples.append(Sample(row["path"], label, video, method, row.get("split") or ""))
        probs.append(float(prob))
    return samples, np.asarray(probs, dtype=np.float64), left


def meta_of(path: Path, meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """What predict.py recorded of the run: the document's meta, or the settings file beside a journal's."""
    if meta:
        return meta
    sidecar = path.with_name(path.name + ".settings.json")
    try:
        saved = json.loads(sidecar.read_text())
        return {"threshold": saved["settings"]["threshold"], **(saved.get("meta") or {})}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def threshold_of(path: Path, meta: Mapping[str, Any]) -> float:
    """The threshold the predictions were made at (0.5 when nothing records it)."""
    value = meta_of(path, meta).get("threshold", 0.5)
    return float(value) if isinstance(value, int | float) else 0.5


def val_threshold_of(path: Path, meta: Mapping[str, Any]) -> float | None:
    """The checkpoint's validation threshold on these probabilities' scale, when predict.py recorded it."""
    value = meta_of(path, meta).get("val_threshold")
    return float(value) if isinstance(value, int | float) and 0.0 <= value <= 1.0 else None


def metrics_from_predictions(
    path: str | Path,
    threshold: float | None = None,
    video_aggregation: str = "mean",
    topk: int = TOPK,
    split: str | None = None,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    out: str | Path | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], Path]:
    """The metrics report of a predictions file and where it was written."""
    path = Path(path).expanduser()
    if video_aggregation not in VIDEO_AGGREGATION:
        raise UserError(
            f"--video-aggregation {video_aggregation!r} is not one of {', '.join(VIDEO_AGGREGATION)}"
        )
    meta, rows = read_document(path, kind_of(path))
    if split is not None:
        rows = (r for r in rows if r.get("split") == split)
    samples, probs, left = labelled(rows)
    if not samples:
        why = ", ".join(f"{n} {what}" for what, n in left.items()) or "no rows"
        raise UserError(
            f"{path} has no row with both a label and a probability ({why}); score a manifest with labels "
            "(predict.py input=manifest.csv) to carry them into the output"
            + (f", and check --split {split}" if split is not None else "")
        )
    splits = sorted({s.split for s in samples if s.split})
    if split is None and len(splits) > 1:
        log.warning("%s pools rows of the splits %s: pass --split test for a test set's numbers", path,
                    ", ".join(splits))  # fmt: skip
    threshold = threshold_of(path, meta) if threshold is None else threshold
    eval_cfg = {"threshold": threshold, "video_aggregation": video_aggregation, "video_topk": topk,
                "bootstrap_samples": bootstrap_samples, "confidence": confidence}  # fmt: skip
    labels = np.array([s.label for s in samples], dtype=np.int64)
    report = {
        "set": path.name,
        "source": str(path),
        **set_report(samples, probs, eval_cfg, seed, val_threshold_of(path, meta)),
        "probabilities": probability_metrics(labels, probs),
        "split": split,
        "left_out": dict(left),
    }
    target = Path(out) if out is not None else path.with_name(f"{path.stem}.metrics.json")
    text = json.dumps(report, indent=2, allow_nan=True)
    atomic_write(target, lambda f: f.write(text.encode()))
    return report, target


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    c, f, v = report["counts"], report["frame"], report["video"]
    low, high = f["auc_ci"]
    lines = [
        f"{report['set']}: {c['images']} rows ({c['real']} real, {c['fake']} fake) in {c['videos']} videos",
        f"  rows:   AUC {f['auc']:.4f} [{low:.4f}, {high:.4f}]  AP {f['ap']:.4f}  EER {f['eer']:.4f}  "
        f"ACC {f['acc']:.4f}  bACC {f['balanced_acc']:.4f}  log loss {f['loss']:.4f}  "
        f"ECE {report['probabilities']['ece']:.4f}  (threshold {report['threshold']:g})",
        f"  videos: AUC {v['auc']:.4f}  ACC {v['acc']:.4f}  EER {v['eer']:.4f}  "
        f"({report['video_aggregation']} over each video's rows)",
    ]
    for method, m in report["per_method"].items():
        lines.append(
            f"  {method}: {m['n']} rows, ACC {m['acc']:.4f}" + (f", AUC {m['auc']:.4f}" if "auc" in m else "")
        )
    if report["left_out"]:
        lines.append("  left out: " + ", ".join(f"{n} {what}" for what, n in report["left_out"].items()))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deepfake.evaluation.from_predictions", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "predictions", help="predict.py's output (.csv, .jsonl, .parquet or .json) of a labelled manifest"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="ACC threshold (default: the predictions')"
    )
    parser.add_argument("--video-aggregation", default="mean", help=" | ".join(VIDEO_AGGREGATION))
    parser.add_argument("--topk", type=int, default=TOPK, help="frames averaged by --video-aggregation topk")
    parser.add_argument("--split", default=None, help="only the rows of this split (e.g. test)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000, help="0 turns the AUC interval off")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--out", default=None, help="the metrics JSON (default: <predictions stem>.metrics.json)"
    )
    args = parser.parse_args(argv)
    report, target = run_reporting_errors(
        metrics_from_predictions, args.predictions, args.threshold, args.video_aggregation, args.topk,
        args.split, args.bootstrap_samples, args.confidence, args.out, args.seed,
    )  # fmt: skip
    for line in summary_lines(report):
        print(line)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
