"""Cheap checks (no image decoding): config sanity, class balance and split leakage.

`start_checks` runs them at the start of every training run (`check_on_start=true`): warnings are logged,
errors stop the run before the first epoch. `python train.py check=true` shows the same findings in full.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from deepfake.data.methods import describe
from deepfake.data.samples import Sample
from deepfake.data.verify import LEAK_KINDS, Leak, find_leaks, pos_weight
from deepfake.errors import ConfigError, DataError

log = logging.getLogger("deepfake.checks")  # the name train.log has always shown

VAL_METRICS = ("auc", "acc", "eer", "ap", "loss", "video_auc", "video_acc", "video_eer")
LOWER_IS_BETTER = ("eer", "loss", "video_eer")
MINORITY_WARN = 1 / 3  # a minority class below this share of the training split deserves pos_weight
SHOWN = 10  # leaked keys named in full; the rest are counted


@dataclass(frozen=True)
class Finding:
    level: str  # "info", "warning" or "error"
    text: str


def effective_world_size() -> int:
    """Processes under torchrun (WORLD_SIZE), else 1: each one takes training.batch_size images."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def config_findings(cfg: DictConfig, num_train: int, batch_size: int | None = None) -> list[Finding]:
    """What the config will do with a training split of `num_train` images, and what looks wrong."""
    tc = cfg.training
    batch = batch_size or tc.batch_size
    out: list[Finding] = []
    world = effective_world_size()
    per_step = batch * tc.grad_accum_steps * world
    # The loader drops the last partial batch unless the split is smaller than one batch.
    batches = max(1, num_train // (batch * world)) if num_train else 0
    steps = math.ceil(batches / tc.grad_accum_steps)
    total = steps * tc.num_epochs
    out.append(
        Finding(
            "info",
            f"effective batch {per_step} ({batch} x {tc.grad_accum_steps} accumulation x {world} process(es)); "
            f"{steps} optimizer steps per epoch, {total} over {tc.num_epochs} epochs",
        )
    )
    if num_train and num_train < batch * world:
        out.append(
            Finding(
                "warning",
                f"training.batch_size={batch} is larger than the training split ({num_train} images): each "
                "epoch is a single partial batch; lower training.batch_size",
            )
        )
    out += _schedule_findings(cfg, steps, total)
    es = tc.early_stopping
    if es.enabled and es.patience >= tc.num_epochs:
        out.append(
            Finding(
                "warning",
                f"training.early_stopping.patience={es.patience} >= training.num_epochs={tc.num_epochs}: "
                "early stopping can never trigger",
            )
        )
    out += _monitor_findings(cfg)
    out += _frozen_backbone_findings(cfg)
    cpus = os.cpu_count() or 1
    if cfg.data.num_workers > cpus:
        out.append(
            Finding(
                "warning",
                f"data.num_workers={cfg.data.num_workers} exceeds the {cpus} CPU cores; workers will compete "
                "(-1 picks one per core)",
            )
        )
    return out


def _schedule_findings(cfg: DictConfig, steps: int, total: int) -> list[Finding]:
    """A warmup or a logging interval longer than the run, given its optimizer steps per epoch and in all."""
    tc = cfg.training
    sc = tc.scheduler
    out: list[Finding] = []
    warm = sc.warmup_steps if sc.warmup_steps is not None else round(sc.warmup_epochs * steps)
    smoke = bool(cfg.debug.fast)  # debug.fast runs one step through every writer: the schedule is moot
    if total and warm >= total and sc.name != "constant" and not smoke:
        key = "warmup_steps" if sc.warmup_steps is not None else "warmup_epochs"
        out.append(
            Finding(
                "warning",
                f"warmup ({warm} steps, training.scheduler.{key}) is as long as the whole training ({total} "
                f"steps): the learning rate never reaches training.learning_rate; shorten "
                f"training.scheduler.{key} or raise training.num_epochs",
            )
        )
    if total and tc.log_every_n_steps > total and not smoke:
        out.append(
            Finding(
                "warning",
                f"training.log_every_n_steps={tc.log_every_n_steps} exceeds the {total} optimizer steps of "
                "the run: no train/loss point will be logged",
            )
        )
    return out


def _frozen_backbone_findings(cfg: DictConfig) -> list[Finding]:
    """A frozen backbone that starts from random weights gives the head random features to learn from."""
    model = cfg.model
    if not model.freeze_backbone or model.pretrained or model.weights:
        return []
    until = cfg.training.unfreeze_at_epoch
    span = "for the whole run" if until is None else f"for its first {until} epoch(s)"
    return [
        Finding(
            "warning",
            f"model.freeze_backbone=true with random backbone weights (model.pretrained=false, no model.weights): "
            f"only the head trains {span}, on random features; pass model.weights=<file> or model.pretrained=true",
        )
    ]


def _monitor_findings(cfg: DictConfig) -> list[Finding]:
    tc = cfg.training
    prefixes = ("val", "val_ema") if tc.ema.enabled else ("val",)
    valid = [f"{p}/{m}" for p in prefixes for m in VAL_METRICS]
    out = []
    watched = [("training.monitor", tc.monitor, tc.monitor_mode)]
    if tc.early_stopping.enabled:
        watched.append(("training.early_stopping.monitor", tc.early_stopping.monitor, tc.early_stopping.mode))
    for key, name, mode in watched:
        if name not in valid:
            out.append(
                Finding("error", f"{key}={name} is not a validation metric; use one of {', '.join(valid)}")
            )
            continue
        lower = name.rsplit("/", 1)[1] in LOWER_IS_BETTER
        if lower == (mode == "max"):
            better = "lower" if lower else "higher"
            out.append(
                Finding(
                    "warning",
                    f"{key}={name} is better when {better}, but its mode is {mode}: the worst epoch would win",
                )
            )
    return out


def dataset_findings(samples: Mapping[str, Sequence[Sample]], sbi: bool = False) -> list[Finding]:
    """Single-class splits and leakage are errors; class imbalance is reported with its pos_weight.

    With `sbi` the train split's fakes are made on the fly, so a train split of real faces alone is fine.
    """
    out: list[Finding] = []
    for split in ("train", "val"):
        items = samples.get(split, [])
        fake = sum(s.label for s in items)
        if split == "train" and sbi and fake == 0:
            continue
        if items and fake in (0, len(items)):
            missing = "fake" if fake == 0 else "real"
            out.append(
                Finding(
                    "error", f"the {split} split has no {missing} images: AUC and training need both classes"
                )
            )
    train = samples.get("train", [])
    weight = pos_weight(train)
    if train and weight is not None and weight > 0:
        share = sum(s.label for s in train) / len(train)
        level = "warning" if min(share, 1 - share) < MINORITY_WARN else "info"
        out.append(
            Finding(
                level,
                f"class balance (train): {share:.0%} fake, {1 - share:.0%} real; pos_weight={weight:.3g} "
                "(real/fake) balances the loss",
            )
        )
    leaks = find_leaks(samples)
    for kind in LEAK_KINDS:
        found = [leak for leak in leaks if leak.kind == kind]
        if found:
            out.append(Finding("error", _leak_text(kind, found)))
    return out


_LEAK_WHAT = {
    "path": ("file(s) are listed in more than one split", "List each file in one split only"),
    "content": (
        "set(s) of identical files (same bytes under different names) are in more than one split",
        "Keep one copy, in one split",
    ),
    "video": ("video id(s) appear in more than one split", "Move each video (and person) into one split"),
    "identity": (
        "identity id(s) appear in more than one split",
        "Move each video (and person) into one split",
    ),
}


def _leak_text(kind: str, leaks: Sequence[Leak]) -> str:
    what, fix = _LEAK_WHAT[kind]
    named = ", ".join(f"{leak.key} ({'+'.join(leak.splits)})" for leak in leaks[:SHOWN])
    more = f" and {len(leaks) - SHOWN} more" if len(leaks) > SHOWN else ""
    return f"leakage: {len(leaks)} {what}: {named}{more}; validation scores would be inflated. {fix}"


def selection_findings(cfg: DictConfig, samples: Mapping[str, Sequence[Sample]]) -> list[Finding]:
    """What `data.train_methods` left in train and val: counts by method and the class balance."""
    data = cfg.data
    if not data.get("train_methods"):
        return []
    how = "only" if data.train_methods_mode == "only" else "all but"
    return [
        Finding(
            "info", f"method selection ({how} {', '.join(data.train_methods)}), {split}: {describe(rows)}"
        )
        for split, rows in samples.items()
        if split in ("train", "val")
    ]


def start_checks(cfg: DictConfig, samples: Mapping[str, Sequence[Sample]], batch_size: int) -> None:
    """Log warnings (and what a method selection left); raise on errors, before any training time is spent."""
    data = dataset_findings(samples, sbi=cfg.data.fake_synthesis == "sbi")
    conf = config_findings(cfg, len(samples.get("train", [])), batch_size)
    for f in selection_findings(cfg, samples):
        log.info(f.text)
    for f in data + conf:
        if f.level == "warning":
            log.warning(f.text)
    hint = "; `python train.py check=true` runs the full check, check_on_start=false skips this one"
    data_errors = [f.text for f in data if f.level == "error"]
    if data_errors:
        raise DataError("; ".join(data_errors) + hint)
    conf_errors = [f.text for f in conf if f.level == "error"]
    if conf_errors:
        raise ConfigError("; ".join(conf_errors))
