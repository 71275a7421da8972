"""The pre-flight check: `python train.py check=true` verifies what a run needs, without training.

Sections, in order: hardware, dataset, config, data loading, one training step. Each finding is logged as
it is found (console and train.log); the last line is the verdict. Warnings do not fail the check; errors do
(`python train.py check=true` exits 1). The loading test and the step use the configured DataModule, model,
optimizer and loop, so they fail exactly where training would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from omegaconf import DictConfig

from deepfake.checks.start import Finding, config_findings, dataset_findings, selection_findings
from deepfake.config import Config, to_config
from deepfake.data.methods import select_splits
from deepfake.data.module import DataModule
from deepfake.data.samples import Sample
from deepfake.data.verify import (
    DatasetScan,
    ImageReport,
    count_table,
    inspect_images,
    scan_dataset,
    scan_manifest,
    size_summary,
)
from deepfake.data.workers import resolve_num_workers
from deepfake.errors import UserError
from deepfake.system.hardware import HardwareManager, describe, hardware_warnings
from deepfake.system.precision import Precision
from deepfake.system.sampler import GB
from deepfake.training.build import build_model, instantiate, seed_everything
from deepfake.training.engine import EpochHooks, LoopConfig, StepContext, TrainState, train_epoch
from deepfake.training.optimizer import build_optimizer

log = logging.getLogger("deepfake.check")

LOAD_BATCHES = 20  # loader batches timed (after the first, which includes worker start-up)
DECODE_IMAGES = 200  # images decoded single-process for the decode-only ceiling
LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass
class Report:
    """Findings by section, logged as they arrive."""

    findings: list[tuple[str, Finding]] = field(default_factory=list)

    def add(self, section: str, level: str, text: str) -> None:
        self.extend(section, [Finding(level, text)])

    def extend(self, section: str, findings: list[Finding]) -> None:
        for f in findings:
            self.findings.append((section, f))
            tag = "" if f.level == "info" else f"{f.level.upper()}: "
            log.log(LEVELS[f.level], "[%s] %s%s", section, tag, f.text)

    def count(self, level: str, section: str | None = None) -> int:
        return sum(f.level == level and section in (None, s) for s, f in self.findings)

    @property
    def ok(self) -> bool:
        return self.count("error") == 0

    @property
    def verdict(self) -> str:
        errors, warnings = self.count("error"), self.count("warning")
        if errors:
            return f"verdict: FAIL, {errors} error(s) and {warnings} warning(s); fix the errors above, then rerun"
        return f"verdict: OK, {warnings} warning(s); ready to train (drop check=true)"


def check(cfg: Config | DictConfig | dict) -> Report:
    """Run every section; each one that can run does, so a single pass names every problem."""
    cfg = to_config(cfg)
    seed_everything(cfg.seed)
    report = Report()
    hw, precision = _hardware(cfg, report)
    model = _model(cfg, report, hw)
    img_size = cfg.data.img_size or (model.img_size if model is not None else cfg.model.img_size or 224)
    data = _dataset(cfg, report, img_size, hw)
    num_train = len(data.samples.get("train", [])) if data is not None else 0
    report.extend("config", config_findings(cfg, num_train))
    if data is None or report.count("error", "dataset"):
        report.add("loading", "info", "skipped: fix the dataset errors above first")
    else:
        batch = _loading(data, report)
        if hw is None or precision is None or model is None:
            report.add("step", "info", "skipped: fix the hardware/model errors above first")
        else:
            _step(cfg, report, hw, precision, model, batch)
    log.log(logging.INFO if report.ok else logging.ERROR, report.verdict)
    return report


def run(cfg: Config | DictConfig | dict) -> int:
    """The `check=true` entry point: 0 when all is well, 1 otherwise."""
    return 0 if check(cfg).ok else 1


def _hardware(cfg: DictConfig, report: Report) -> tuple[HardwareManager | None, Precision | None]:
    try:
        hw = HardwareManager(**cfg.hardware)
    except UserError as e:
        report.add("hardware", "error", str(e))
        return None, None
    hw.configure(resolve_num_workers(cfg.data.num_workers))
    summary = hw.summary(str(_existing(Path(cfg.base_path).expanduser())))
    report.add("hardware", "info", describe(summary))
    report.add("hardware", "info", f"device {hw.device}: {hw.reason}")
    for text in hardware_warnings(summary, cfg.backup.min_free_gb):
        report.add("hardware", "warning", text)
    try:
        precision = hw.precision(cfg.training.amp)
    except UserError as e:
        report.add("hardware", "error", str(e))
        return hw, None
    report.add("hardware", "info", f"precision {precision.name} (training.amp={cfg.training.amp})")
    return hw, precision


def _existing(path: Path) -> Path:
    """The nearest folder that exists: base_path may not be created yet."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _model(cfg: DictConfig, report: Report, hw: HardwareManager | None) -> Any:
    try:
        model = build_model(cfg)
    except UserError as e:
        report.add("model", "error", str(e))
        return None
    params = sum(p.numel() for p in model.parameters())
    report.add(
        "model", "info", f"{model.display_name}: {params / 1e6:.2f}M parameters, input {model.img_size}px"
    )
    return model.to(hw.device) if hw is not None else model


def _dataset(cfg: DictConfig, report: Report, img_size: int, hw: HardwareManager | None) -> DataModule | None:
    """Structure, counts, every image decoded, sizes, balance and leakage; the scan feeds the loader."""
    tc = cfg.training
    data = instantiate(
        cfg.data,
        img_size=img_size,
        batch_size=tc.batch_size,
        eval_batch_size=tc.eval_batch_size,
        seed=cfg.seed,
        pin_memory=hw is not None and hw.device.type == "cuda",
        clip_frames=cfg.model.frames,  # a clip model's loaders yield clips (what get_model built from the key)
        masks=cfg.model.mask_head,
        _convert_="all",
    )
    try:
        if data.kind == "manifest" and data.manifest is not None:  # to_config() has required the path
            scan = scan_manifest(data.manifest, data.splits)
            report.add("dataset", "info", f"manifest {data.manifest}")
        elif data.kind == "generators":  # read as training reads it: layout, validation carved, selection
            data.setup()
            scan = DatasetScan(data.resolve_root(), dict(data.samples))
            report.add(
                "dataset", "info", f"root {scan.root} (fully synthetic images: data.layout={data.layout})"
            )
        else:
            scan = scan_dataset(data.resolve_root(), data.splits, data.real_dirs, data.fake_dirs)
            report.add("dataset", "info", f"root {scan.root}")
        fitting = {k: scan.samples[k] for k in ("train", "val") if k in scan.samples}
        scan.samples.update(
            select_splits(fitting, data.train_methods, data.train_methods_mode, "train_methods")
        )
    except UserError as e:
        report.add("dataset", "error", str(e))
        return None
    report.extend("dataset", selection_findings(cfg, scan.samples))
    for problem in scan.problems:
        report.add("dataset", "error", problem)
    _report_counts(report, scan.samples)
    paths = [s.path for samples in scan.samples.values() for s in samples]
    images = inspect_images(paths, data.num_workers)
    for issue in images.issues:
        report.add("dataset", "error", f"{issue.kind} image {issue.path}: {issue.detail}")
    _report_images(report, images, len(paths), img_size, data.geometry)
    report.extend("dataset", dataset_findings(scan.samples))
    data.samples = scan.samples
    return data


def _report_counts(report: Report, splits: dict[str, list[Sample]]) -> None:
    """Each split's images and videos, per class and per manipulation method."""
    for split, samples in splits.items():
        table = count_table(samples)
        classes = " | ".join(
            f"{name} {sum(c.values())}"
            + (f" ({', '.join(f'{m}: {n}' for m, n in sorted(c.items()))})" if c else "")
            for name, c in table.items()
        )
        videos = len({s.video for s in samples})
        report.add("dataset", "info", f"{split}: {len(samples)} images, {videos} videos | {classes}")


def _report_images(report: Report, images: ImageReport, n: int, img_size: int, geometry: str) -> None:
    """The decode rate over the n images, then the 16-bit ones and the ones smaller than the input."""
    rate = n / max(images.seconds, 1e-9)
    report.add(
        "dataset",
        "info",
        f"decoded all {n} images in {images.seconds:.1f}s ({rate:.0f} img/s); {size_summary(images.sizes)}",
    )
    if images.wide:
        shown = ", ".join(images.wide[:5]) + (
            f" and {len(images.wide) - 5} more" if len(images.wide) > 5 else ""
        )
        report.add(
            "dataset",
            "warning",
            f"{len(images.wide)} 16-bit image(s) (PIL mode I;16): {shown}; they are scaled to 8 bits when "
            "loaded (value / 257). Convert them to 8 bits if they were saved 16-bit by mistake",
        )
    small = int((images.sizes.min(axis=1) < img_size).sum()) if len(images.sizes) else 0
    if small:
        report.add(
            "dataset",
            "warning",
            f"{small} image(s) are smaller than the {img_size}px input and will be "
            + ("zero-padded (data.geometry=crop)" if geometry == "crop" else "upscaled")
            + "; check the images or lower data.img_size",
        )


def _loading(data: DataModule, report: Report) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The configured training loader's images/s beside a single-process decode-only rate."""
    loader = data.train_dataloader()
    n = min(LOAD_BATCHES + 1, len(loader))
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    t1, images = time.perf_counter(), 0
    for _ in range(n - 1):
        images += next(it)[0].shape[0]
    timed = time.perf_counter() - t1
    del it  # shuts the workers down before the step test
    workers = data.num_workers
    if images:
        rate = images / max(timed, 1e-9)
        measured = f"{rate:.0f} img/s over {n - 1} batches"
    else:
        rate = first[0].shape[0] / max(t_first, 1e-9)
        measured = f"{rate:.0f} img/s (one batch, start-up included)"
    dataset = loader.dataset
    picks = np.linspace(0, len(dataset) - 1, min(DECODE_IMAGES, len(dataset))).astype(int)
    t2 = time.perf_counter()
    for i in picks:
        dataset.load(int(i))
    decode = len(picks) / max(time.perf_counter() - t2, 1e-9)
    ceiling = decode * max(1, workers)
    report.add(
        "loading",
        "info",
        f"training loader: {measured} of {first[0].shape[0]} at {first[0].shape[-1]}px, {workers} worker(s), "
        f"first batch after {t_first:.2f}s",
    )
    report.add(
        "loading",
        "info",
        f"decode-only ceiling: {decode:.0f} img/s per process, ~{ceiling:.0f} img/s with "
        f"{max(1, workers)} process(es); the loader reaches {rate / ceiling:.0%}",
    )
    return first


def _step(
    cfg: DictConfig,
    report: Report,
    hw: HardwareManager,
    precision: Precision,
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """One forward/backward/optimizer step through the real loop, with its time and peak memory."""
    tc = cfg.training
    optimizer, _ = build_optimizer(model, cfg, with_scheduler=False)
    loop = LoopConfig.from_config(cfg, accum_steps=1, on_nan="stop", log_every=1)
    logged: dict[str, float] = {}
    hw.reset_peak_memory()
    t0 = time.perf_counter()
    try:
        ctx = StepContext(model, optimizer, precision, hw.device)
        stats = train_epoch(
            ctx, [batch], TrainState(), loop, 1, EpochHooks(log=lambda step, v: logged.update(v))
        )
    except torch.cuda.OutOfMemoryError:
        report.add(
            "step",
            "error",
            f"out of GPU memory at training.batch_size={tc.batch_size}: lower it (training.grad_accum_steps "
            "keeps the effective batch), or set model.grad_checkpointing=true",
        )
        return
    except UserError as e:
        report.add("step", "error", str(e))
        return
    except RuntimeError as e:  # shape or dtype mismatches between the model and the loader's images
        report.add("step", "error", f"the training step failed: {type(e).__name__}: {e}")
        return
    finally:
        took = time.perf_counter() - t0  # the loss was read on the host at this log step: work is done
        peak = hw.peak_memory_gb()
        del optimizer
        hw.free_memory()  # training starts from an empty cache, not the check's leftovers
    if peak is not None:
        total = torch.cuda.get_device_properties(hw.device).total_memory / GB
        memory = f"peak GPU memory {peak:.2f} GB of {total:.1f} GB"
    else:
        memory = f"process RSS {psutil.Process().memory_info().rss / GB:.2f} GB"
    images = batch[0]
    report.add(
        "step",
        "info",
        f"one step on a real batch of {images.shape[0]} at {images.shape[-1]}px ({precision.name}): loss "
        f"{stats['train/epoch_loss']:.4f}, grad norm {logged.get('train/grad_norm', float('nan')):.3g}, "
        f"{took:.2f}s (first step, includes warm-up); {memory}",
    )
    if peak is not None and peak > 0.9 * total:
        report.add(
            "step",
            "warning",
            "the step uses over 90% of GPU memory; validation batches (2x by default) or fragmentation may "
            "run out: lower training.batch_size or set model.grad_checkpointing=true",
        )
