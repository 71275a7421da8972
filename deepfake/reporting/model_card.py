"""MODEL_CARD.md: the run described in Hugging Face's model-card layout, results in the Hub's `model-index`.

The YAML front matter is written by `huggingface_hub.ModelCardData` (so the Hub reads its `model-index`: one
result per evaluated set, frame and video metrics told apart by `config`); the body follows the Hub's template
headings (model details, uses and out-of-scope uses, limitations, training data and preprocessing, evaluation
with its protocol, calibration) and is rendered from `templates/model_card.md.j2`. `python -m deepfake.export`
copies it next to an exported model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepfake.reporting.facts import (
    NOT_RECORDED,
    TABLE_FPR,
    count,
    data_text,
    duration,
    extraction_text,
    hardware_text,
    input_text,
    is_number,
    model_text,
    num,
    size_text,
    text,
    training_text,
    verdict_row,
    weights_text,
)
from deepfake.reporting.render import render
from deepfake.reporting.run_facts import RunFacts, SetFacts, dig
from deepfake.runs.fileio import atomic_write

CARD_FILE = "MODEL_CARD.md"
TASK = "image-classification"
TASK_NAME = "Deepfake detection (probability that a face is fake)"
#: model-index metrics: (metric type, metric name, config, path in metrics.json)
INDEX_METRICS = (
    ("roc_auc", "Frame AUC", "frame", ("frame", "auc")),
    ("average_precision", "Frame AP", "frame", ("frame", "ap")),
    ("eer", "Frame EER", "frame", ("frame", "eer")),
    ("tpr_at_fpr", "Frame TPR at 1% FPR", "frame", ("frame", "tpr_at_fpr", TABLE_FPR)),
    ("accuracy", "Frame accuracy", "frame", ("frame", "acc")),
    ("roc_auc", "Video AUC", "video", ("video", "auc")),
    ("ece", "Frame ECE (calibrated)", "frame", ("calibration", "calibrated", "ece")),
)


def eval_results(sets: Sequence[SetFacts]) -> list[Any]:
    """One `EvalResult` per (set, metric) that has a finite value."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=TASK,
            task_name=TASK_NAME,
            dataset_type=s.name,
            dataset_name=s.name,
            dataset_split="test",
            metric_type=metric,
            metric_name=name,
            metric_config=config,
            metric_value=round(float(value), 4),
        )
        for s in sets
        for metric, name, config, path in INDEX_METRICS
        if is_number(value := dig(s.metrics, *path))
    ]


def card_name(run: RunFacts) -> str:
    arch = dig(run.config, "model", "architecture") or run.checkpoint.get("architecture") or "detector"
    return f"deepfake-{arch}-{run.name}"


def front_matter(run: RunFacts, sets: Sequence[SetFacts]) -> str:
    from huggingface_hub import ModelCardData

    names = {dig(run.config, "model", "architecture"), run.checkpoint.get("architecture")}  # alias, timm name
    results = eval_results(sets)
    data = ModelCardData(
        library_name="pytorch",
        pipeline_tag=TASK,
        tags=[
            "deepfake-detection",
            "face-forensics",
            "timm",
            *sorted(str(n) for n in names if isinstance(n, str) and n),
        ],
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=card_name(run) if results else None,  # only model-index uses it; alone it is no Hub key
        eval_results=results or None,
    )
    return data.to_yaml()


def md(value: Any) -> str:
    """Untrusted text for a Markdown table cell or line: no HTML, no table breaks."""
    escaped = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("|", "\\|").replace("\n", " ")


def weakest_methods(sets: Sequence[SetFacts], k: int = 3) -> list[str]:
    """The k (set, method) pairs with the lowest per-method AUC: what the detector misses most."""
    found = [
        (entry["auc"], s.name, method)
        for s in sets
        if isinstance(per_method := s.metrics.get("per_method"), dict)
        for method, entry in per_method.items()
        if isinstance(entry, dict) and is_number(entry.get("auc"))
    ]
    return [f"{method} on {name} (AUC {auc:.4f})" for auc, name, method in sorted(found)[:k]]


def robustness_lines(sets: Sequence[SetFacts]) -> list[str]:
    """Per set with a robustness grid (`evaluate.py perturb=...`): its clean and mean perturbed frame AUC and the
    type it suffers most from."""
    lines = []
    for s in sets:
        summary = s.metrics.get("robustness")
        if not isinstance(summary, dict):
            continue
        per_type = summary.get("per_type") if isinstance(summary.get("per_type"), dict) else {}
        ranked = sorted((auc, t) for t, v in per_type.items() if is_number(auc := dig(v, "frame_auc")))
        worst = f"; worst {md(ranked[0][1])} (mean AUC {ranked[0][0]:.4f})" if ranked else ""
        lines.append(
            f"{md(s.name)}: frame AUC {num(dig(summary, 'clean', 'frame_auc'))} clean, "
            f"{num(dig(summary, 'mean', 'frame_auc'))} on average over {len(per_type)} perturbation types{worst}"
        )
    return lines


def checkpoint_argument(run: RunFacts) -> str:
    """How predict.py names this model from the folder the card is in: the run's own `checkpoints/best.pt`."""
    path = run.checkpoint_path
    if path is None:
        return NOT_RECORDED
    return f"checkpoints/{path.name}" if path.parent.name == "checkpoints" else path.name


def point_values(point: Any) -> dict[str, str] | None:
    """The validation threshold's numbers as text; None when the run stored none."""
    if not isinstance(point, dict) or not is_number(point.get("threshold")):
        return None
    return {
        "target_fpr": md(text(point.get("target_fpr"))),
        **{k: num(point.get(k)) for k in ("threshold", "fpr", "tpr")},
    }


def card_values(run: RunFacts, sets: Sequence[SetFacts]) -> dict[str, Any]:
    cfg = run.config
    eval_cfg = cfg.get("eval") or {}
    first = sets[0].metrics if sets else {}
    return {
        "front_matter": front_matter(run, sets).strip(),
        "name": card_name(run),
        "model": model_text(run),
        "size": size_text(run),
        "input": input_text(run),
        "weights": weights_text(run),
        "data": data_text(run),
        "extraction": extraction_text(run),
        "training": training_text(run),
        "time": duration(run.metrics.get("duration_s")),
        "hardware": hardware_text(run),
        "seed": text(cfg.get("seed")),
        "commit": text(dig(run.metrics, "code", "commit")),
        "version": text(run.checkpoint.get("version")),
        "monitor": text(run.metrics.get("monitor") or dig(cfg, "training", "monitor")),
        "aggregation": text(first.get("video_aggregation") or eval_cfg.get("video_aggregation")),
        "threshold": text(first.get("threshold") or eval_cfg.get("threshold")),
        "tta": text(eval_cfg.get("tta")),
        "temperature": num(dig(run.metrics, "calibration", "temperature"), 4, "none fitted"),
        "point": point_values(run.metrics.get("operating_point")),
        "rows": [{k: md(v) for k, v in verdict_row(s).items()} for s in sets],
        "calibration_rows": [
            {
                "set": md(s.name),
                "raw": num(dig(s.metrics, "calibration", "raw", "ece")),
                "calibrated": num(dig(s.metrics, "calibration", "calibrated", "ece")),
                "applied": "yes" if dig(s.metrics, "calibration", "applied") else "no",
            }
            for s in sets
        ],
        "set_list": [f"{md(s.name)} ({count(dig(s.metrics, 'counts', 'images'))} images)" for s in sets],
        "weakest": weakest_methods(sets),
        "robustness": robustness_lines(sets),
        "checkpoint": md(checkpoint_argument(run)),
        "md": md,
    }


def model_card(run: RunFacts, sets: Sequence[SetFacts]) -> str:
    return render("model_card.md.j2", card_values(run, sets))


def write_model_card(folder: Path, run: RunFacts, sets: Sequence[SetFacts]) -> Path:
    text_ = model_card(run, sets)
    path = folder / CARD_FILE
    atomic_write(path, lambda f: f.write(text_.encode("utf-8")))
    return path
