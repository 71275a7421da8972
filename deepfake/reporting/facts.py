"""The words and numbers of report.html and MODEL_CARD.md: facts read by `run_facts`, formatted for reading.

Every formatter takes whatever the files held and returns text: a missing or malformed value becomes "not run"
(a metric, a step that did not happen) or "not recorded" (a fact the run did not write down), never an error.
"""

from __future__ import annotations

import math
from typing import Any

from deepfake.reporting.run_facts import RunFacts, SetFacts, dig

NOT_RUN = "not run"
NOT_RECORDED = "not recorded"
TABLE_FPR = "0.01"  # the verdict table's operating point: TPR at 1% FPR


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, digits: int = 4, missing: str = NOT_RUN) -> str:
    return f"{x:.{digits}f}" if is_number(x) else missing


def count(x: Any, missing: str = NOT_RECORDED) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else missing


def interval(ci: Any) -> str:
    low, high = dig(ci, 0), dig(ci, 1)
    return f"{low:.4f}-{high:.4f}" if is_number(low) and is_number(high) else NOT_RUN


def duration(seconds: Any) -> str:
    if not is_number(seconds):
        return NOT_RECORDED
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def text(x: Any, missing: str = NOT_RECORDED) -> str:
    return missing if x is None or x == "" else str(x)


def verdict_row(s: SetFacts) -> dict[str, str]:
    """One set's row of the verdict table."""
    m = s.metrics
    return {
        "set": s.name,
        "images": count(dig(m, "counts", "images")),
        "videos": count(dig(m, "counts", "videos")),
        "auc": num(dig(m, "frame", "auc")),
        "auc_ci": interval(dig(m, "frame", "auc_ci")),
        "ap": num(dig(m, "frame", "ap")),
        "eer": num(dig(m, "frame", "eer")),
        "tpr": num(dig(m, "frame", "tpr_at_fpr", TABLE_FPR)),
        "acc": num(dig(m, "frame", "acc")),
        "video_auc": num(dig(m, "video", "auc")),
        "log_loss": num(dig(m, "calibration", "calibrated", "log_loss")),
        "ece": num(dig(m, "calibration", "calibrated", "ece")),
    }


def validation_row(run: RunFacts) -> dict[str, str] | None:
    """The best epoch's validation numbers, marked as the selection split (not a test); None without them."""
    best = dig(run.metrics, "best", "metrics")
    if not isinstance(best, dict) or not best:
        return None
    point = dig(run.metrics, "operating_point") or {}
    at_1pct = point.get("tpr") if is_number(point.get("target_fpr")) and point["target_fpr"] == 0.01 else None
    calibration = dig(run.metrics, "calibration") or {}
    return {
        "set": f"validation, best epoch {text(dig(run.metrics, 'best', 'epoch'), '?')} (selection split)",
        "images": count(point.get("images") or calibration.get("images")),
        "videos": NOT_RECORDED,
        "auc": num(best.get("val/auc")),
        "auc_ci": NOT_RUN,
        "ap": num(best.get("val/ap")),
        "eer": num(best.get("val/eer")),
        "tpr": num(at_1pct),
        "acc": num(best.get("val/acc")),
        "video_auc": num(best.get("val/video_auc")),
        "log_loss": num(dig(calibration, "after", "log_loss"), missing=num(best.get("val/loss"))),
        "ece": num(dig(calibration, "after", "ece")),
    }


def model_text(run: RunFacts) -> str:
    cfg = run.config.get("model") or {}
    arch, timm_name = cfg.get("architecture"), run.checkpoint.get("architecture")
    parts = [
        f"{arch} (timm {timm_name})" if arch and timm_name and arch != timm_name else text(arch or timm_name)
    ]
    if isinstance(cfg.get("streams"), list) and cfg["streams"] != ["rgb"]:
        parts.append(f"streams {'+'.join(map(str, cfg['streams']))} ({cfg.get('fusion')} fusion)")
    if is_number(cfg.get("frames")) and cfg["frames"] > 1:
        parts.append(f"clip model, {cfg['frames']} frames")
    if cfg.get("mask_head"):
        parts.append("with a blend-mask head")
    return ", ".join(parts)


def size_text(run: RunFacts) -> str:
    s = run.summary
    params, trainable, flops = s.get("parameters"), s.get("trainable_parameters"), s.get("flops_per_image")
    out = f"{count(params)} parameters ({count(trainable)} trainable)" if params else NOT_RECORDED
    if is_number(flops):
        out += f"; {flops / 1e9:.3g} GFLOPs per image"
    return out


def input_text(run: RunFacts) -> str:
    pre = run.checkpoint.get("preprocess")
    if not isinstance(pre, dict) or not is_number(pre.get("img_size")):
        return NOT_RECORDED
    mean, std = pre.get("mean"), pre.get("std")
    out = f"{pre['img_size']}x{pre['img_size']} px RGB, mean {_triple(mean)}, std {_triple(std)}"
    frames = pre.get("frames")
    return out + (f", clips of {frames} frames" if is_number(frames) and frames > 1 else "")


def _triple(values: Any) -> str:
    if isinstance(values, list) and all(is_number(v) for v in values):
        return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
    return NOT_RECORDED


def weights_text(run: RunFacts) -> str:
    cfg = run.config.get("model") or {}
    if cfg.get("weights"):
        return f"initialised from {cfg['weights']}"
    pretrained = cfg.get("pretrained")
    return {True: "ImageNet-pretrained backbone (timm)", False: "trained from scratch"}.get(
        pretrained, NOT_RECORDED
    )


def data_text(run: RunFacts) -> str:
    data = run.config.get("data") or {}
    kind = data.get("kind")
    if not kind:
        return NOT_RECORDED
    where = (
        data.get("manifest")
        or data.get("root")
        or ("generated in the cache" if kind == "synthetic" else None)
    )
    train = dig(run.checkpoint, "train_state", "num_train_samples")
    out = f"{kind}: {text(where)}"
    return out + (f"; {count(train)} training images" if isinstance(train, int) else "")


def extraction_text(run: RunFacts) -> str:
    """The crop settings extract.py used (its extraction.json, kept in manifest-trained checkpoints)."""
    ex = run.checkpoint.get("extraction")
    if not isinstance(ex, dict):
        kind = dig(run.config, "data", "kind")
        why = f" (data.kind={kind}: faces not cropped by extract.py)" if kind and kind != "manifest" else ""
        return NOT_RECORDED + why
    det, faces = ex.get("detector") or {}, ex.get("faces") or {}
    return (
        f"{text(ex.get('frames_per_video'))} frames per video; detector {text(det.get('kind'))}; margin "
        f"{text(faces.get('margin'))}; crop {text(faces.get('size'))} px; alignment "
        f"{'on' if faces.get('align') is True else 'off' if faces.get('align') is False else NOT_RECORDED}; "
        f"faces: {text(faces.get('policy'))}"
    )


def training_text(run: RunFacts) -> str:
    m, t = run.metrics, run.config.get("training") or {}
    if not m:
        return NOT_RECORDED
    optimizer = str(dig(t, "optimizer", "_target_") or NOT_RECORDED).rsplit(".", 1)[-1]
    best = m.get("best") or {}
    return (
        f"{text(m.get('epochs_completed'))} of {text(t.get('num_epochs'))} epochs ({text(m.get('stop_reason'))}), "
        f"{text(m.get('global_step'))} steps; best epoch {text(best.get('epoch'))} by {text(m.get('monitor'))} "
        f"= {num(best.get('value'))}; batch {text(t.get('batch_size'))}, learning rate "
        f"{text(t.get('learning_rate'))}, {optimizer}"
    )


def calibration_text(run: RunFacts) -> str:
    c = run.metrics.get("calibration") or run.checkpoint.get("calibration")
    if not isinstance(c, dict) or not is_number(c.get("temperature")):
        return NOT_RUN
    return (
        f"temperature {c['temperature']:.4g} fitted on {text(c.get('images'))} validation images; ECE "
        f"{num(dig(c, 'before', 'ece'))} -> {num(dig(c, 'after', 'ece'))}, log loss "
        f"{num(dig(c, 'before', 'log_loss'))} -> {num(dig(c, 'after', 'log_loss'))}"
    )


def threshold_text(run: RunFacts) -> str:
    p = run.metrics.get("operating_point") or run.checkpoint.get("operating_point")
    if not isinstance(p, dict) or not is_number(p.get("threshold")):
        return NOT_RUN
    return (
        f"{p['threshold']:.4f} for FPR {text(p.get('target_fpr'))} (validation FPR {num(p.get('fpr'))}, TPR "
        f"{num(p.get('tpr'))} on {text(p.get('images'))} images): predict.py threshold=val_fpr"
    )


def hardware_text(run: RunFacts) -> str:
    h = run.hardware
    if not h:
        return NOT_RECORDED
    cuda = f", CUDA {h['cuda_version']}" if h.get("device") == "cuda" and h.get("cuda_version") else ""
    world = h.get("world_size")
    procs = f", {world} processes" if isinstance(world, int) and world > 1 else ""
    return (
        f"{text(h.get('device_name'))} ({text(h.get('device'))}), {text(h.get('cpu_count'))} CPUs, RAM "
        f"{text(h.get('ram_gb'))} GB; torch {text(h.get('torch'))}{cuda}{procs}"
    )


def code_text(run: RunFacts) -> str:
    code = run.metrics.get("code") or {}
    version = run.checkpoint.get("version")
    commit = text(code.get("commit"))
    dirty = " with uncommitted changes" if code.get("dirty") else ""
    return f"git commit {commit}{dirty}; deepfake {text(version)}"


def run_rows(run: RunFacts) -> list[tuple[str, str]]:
    """The run section, in reading order."""
    return [
        ("model", model_text(run)),
        ("size", size_text(run)),
        ("input", input_text(run)),
        ("weights", weights_text(run)),
        ("data", data_text(run)),
        ("preprocessing (extraction.json)", extraction_text(run)),
        ("training", training_text(run)),
        ("training time", duration(run.metrics.get("duration_s"))),
        ("calibration", calibration_text(run)),
        ("validation threshold", threshold_text(run)),
        ("hardware", hardware_text(run)),
        ("code", code_text(run)),
        ("seed", text(run.config.get("seed"))),
        ("run directory", text(run.run_dir)),
        ("checkpoint", text(run.checkpoint_path)),
    ]
