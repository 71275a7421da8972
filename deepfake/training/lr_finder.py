"""`python train.py find_lr=true`: the LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks"; Lightning's LearningRateFinder, whose defaults and loss smoothing this follows).

The run's own model, data, optimizer, AMP and loop (built by TrainerSetup's builders, as training builds them) train for up to
`lr_finder.num_steps` optimizer steps while the learning rate grows exponentially from `min_lr` to `max_lr`; the
sweep stops early once the smoothed loss exceeds `early_stop_threshold` x its best.

The suggestion is fastai's `valley` rule on the smoothed loss: halfway along its longest descending stretch.
Lightning's rule, the steepest descent of the smoothed loss, is logged beside it; on a 100-step sweep it lands
late, near the divergence (on the synthetic default, 30x the rate that trains well), because the moving average
lags the raw loss by about 1 / (1 - beta) = 50 steps. The run directory gets lr_find.csv and lr_find.png and no
checkpoint: the swept weights are thrown away.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig

from deepfake.config import Config, to_config
from deepfake.errors import UserError
from deepfake.model.detector import check_pretrained
from deepfake.runs.fileio import atomic_write
from deepfake.system import distributed
from deepfake.training.build import seed_everything
from deepfake.training.engine import EpochHooks, NonFiniteLossError, TrainState, train_epoch
from deepfake.training.run_dir import discard_fresh_run_dir, open_run
from deepfake.training.setup import TrainerSetup

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("deepfake")

BETA = 0.98  # Lightning's loss smoothing: an exponential moving average, bias-corrected
SKIP_BEGIN, SKIP_END = 10, 1  # Lightning's suggestion() skips these first and last points
VALLEY_SKIP_END = 5  # fastai's lr_find skips the first tenth and the last 5 points
FLAT_DESCENT = 0.05  # a smoothed loss that falls by less than this fraction gives no reliable suggestion
RULE = "fastai's valley rule on the smoothed loss: halfway along its longest descending stretch"
STEEPEST = "Lightning's rule (steepest descent of the smoothed loss)"


class ExponentialSweep:
    """The sweep's schedule, in the place of the run's scheduler: step k of n sets the rate to
    `min_lr * (max_lr / min_lr) ** (k / (n - 1))`, each parameter group keeping its ratio to the largest rate
    (a backbone scale or layer decay sweeps along)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, min_lr: float, max_lr: float, num_steps: int
    ) -> None:
        self.optimizer = optimizer
        self.min_lr, self.max_lr, self.num_steps = min_lr, max_lr, num_steps
        top = max(group["lr"] for group in optimizer.param_groups)
        self.ratios = [group["lr"] / top for group in optimizer.param_groups]
        self.step = 0
        self._apply()

    def lr(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.num_steps - 1))

    def _apply(self) -> None:
        for group, ratio in zip(self.optimizer.param_groups, self.ratios, strict=True):
            group["lr"] = self.lr(self.step) * ratio

    def step_update(self) -> None:
        """After each optimizer step (what the loop calls on a schedule)."""
        self.step += 1
        self._apply()


@dataclass
class Sweep:
    """The sweep's record: the rate and loss of each step, its smoothed loss, and why it stopped."""

    threshold: float | None
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop: str | None = None
    _average: float = field(default=0.0, repr=False)

    def add(self, lr: float, loss: float) -> None:
        """Lightning's _LRCallback: a bias-corrected moving average; stop once it passes threshold x its best."""
        n = len(self.losses)
        average = (BETA * self._average + (1 - BETA) * loss) if n else (1 - BETA) * loss
        self._average = average
        smoothed = average / (1 - BETA ** (n + 1))
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        finite = [s for s in self.smoothed[:-1] if math.isfinite(s)]
        best = min(finite) if finite else smoothed
        if not math.isfinite(loss):
            self.stop = f"the loss became {loss} at learning rate {lr:.2e}"
        elif self.threshold is not None and n > 1 and smoothed > self.threshold * best:
            self.stop = f"the smoothed loss {smoothed:.4f} passed {self.threshold} x its best {best:.4f}"


def valley(smoothed: list[float]) -> int | None:
    """fastai's `valley`: the longest decreasing run (a longest decreasing subsequence) of the smoothed loss,
    and the point halfway along it; skips the first tenth and the last 5 points as fastai's lr_find does.
    None when fewer than 3 finite points remain."""
    finite = next((i for i, v in enumerate(smoothed) if not math.isfinite(v)), len(smoothed))
    begin = len(smoothed) // 10
    losses = smoothed[begin : min(finite, len(smoothed) - VALLEY_SKIP_END)]
    n = len(losses)
    if n < 3:
        return None
    longest = [1] * n  # longest decreasing subsequence ending at i
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:
                end, start = i, i - longest[i]
    sections = (end - start) / 3
    return begin + start + int(sections) + int(sections / 2)


def descent(smoothed: list[float]) -> float | None:
    """How far the smoothed loss falls, as a fraction of its value where the valley rule starts looking (the
    same window: after the first tenth, before the last points and any non-finite one); None when too short."""
    finite = next((i for i, v in enumerate(smoothed) if not math.isfinite(v)), len(smoothed))
    losses = smoothed[len(smoothed) // 10 : min(finite, len(smoothed) - VALLEY_SKIP_END)]
    if len(losses) < 3 or losses[0] <= 0:
        return None
    return (losses[0] - min(losses)) / losses[0]


def too_flat(smoothed: list[float]) -> str | None:
    """Why the curve is too flat for a reliable suggestion (its loss falls by less than FLAT_DESCENT), or None."""
    drop = descent(smoothed)
    if drop is None or drop >= FLAT_DESCENT:
        return None
    return (
        f"too flat for a reliable suggestion: the smoothed loss falls by only {drop:.1%} over the sweep "
        f"(less than {FLAT_DESCENT:.0%}); widen lr_finder.min_lr..max_lr or raise lr_finder.num_steps"
    )


def steepest(smoothed: list[float]) -> int | None:
    """The index of the steepest descent of the smoothed loss, skipping the first and last points (Lightning's
    `suggestion()`); None when too few finite points remain."""
    values = np.asarray(smoothed[SKIP_BEGIN : len(smoothed) - SKIP_END], dtype=float)
    kept = np.flatnonzero(np.isfinite(values))
    if len(kept) < 2:
        return None
    return int(kept[np.gradient(values[kept]).argmin()]) + SKIP_BEGIN


class LrFinder(TrainerSetup):
    """Builds a run's parts as training does, then sweeps instead of training."""

    def __init__(self, cfg: DictConfig, run_dir: Path, ddp: distributed.DistContext) -> None:
        self.cfg, self.tc, self.run_dir, self.ddp = cfg, cfg.training, run_dir, ddp

    def setup(self) -> None:
        """Training's own builders, up to the optimizer: the sweep needs no resume and no observers."""
        log.info("run directory: %s", self.run_dir.resolve())
        seed_everything(self.cfg.seed)
        hardware = self._setup_hardware()
        self.hw, self.device = hardware.hw, hardware.device
        model = self._setup_model(hardware)
        data = self._setup_data(hardware, model)
        self.train_loader, self.num_batches = data.train_loader, data.num_batches
        model = distributed.wrap(model, self.ddp, self.device, self.cfg.distributed.sync_batchnorm)
        opt = self._setup_optimization(hardware, model, data)  # makes checkpoints/, which `find_lr` removes
        self.optimizer, self.step_context, self.loop = opt.optimizer, opt.step_context, opt.loop

    def sweep(self) -> Sweep:
        settings = self.cfg.lr_finder
        schedule = ExponentialSweep(self.optimizer, settings.min_lr, settings.max_lr, settings.num_steps)
        record = Sweep(settings.early_stop_threshold)
        ctx = replace(self.step_context, scheduler=schedule, ema=None)
        loop = replace(self.loop, log_every=1, on_nan="stop")  # a loss read every step; a NaN ends the sweep

        def on_log(step: int, values: dict[str, float]) -> None:
            record.add(schedule.lr(step - 1), _mean_over_ranks(values["train/loss"], self.device))

        def should_stop(step: int) -> bool:
            return record.stop is not None or step >= settings.num_steps

        hooks = EpochHooks(log=on_log, should_stop=should_stop)
        log.info(
            "LR range test: up to %d optimizer steps, learning rate %.1e to %.1e (one loss read per step)",
            settings.num_steps, settings.min_lr, settings.max_lr,
        )  # fmt: skip
        state, epoch = TrainState(), 0
        while not should_stop(state.global_step):
            state.epoch, state.batch_in_epoch = epoch, 0
            self.train_loader.sampler.set_epoch(epoch)
            try:
                train_epoch(ctx, self.train_loader, state, loop, self.num_batches, hooks)
            except NonFiniteLossError:
                break  # `record` holds the non-finite loss and says so
            epoch += 1
        return record


def _mean_over_ranks(value: float, device: torch.device) -> float:
    """Under DDP every rank records the same mean loss, so all of them stop at the same step."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def write_csv(path: Path, record: Sweep) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", "lr", "loss", "smoothed_loss"])
    for step, row in enumerate(zip(record.lrs, record.losses, record.smoothed, strict=True), start=1):
        writer.writerow([step, *(f"{v:.6g}" for v in row)])
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))


def lr_figure(record: Sweep, index: int | None, other: int | None, configured: float) -> Figure:
    """Loss against learning rate (log scale): raw and smoothed, the suggestion and the configured rate."""
    from matplotlib.figure import Figure  # here, not at the top: `import train` must not load matplotlib

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(record.lrs, record.losses, color="0.75", linewidth=1, label="loss")
    ax.plot(record.lrs, record.smoothed, color="C0", label="smoothed loss")
    if index is not None:
        ax.plot(record.lrs[index], record.smoothed[index], "o", color="C3",
                label=f"suggestion {record.lrs[index]:.2e} (valley)")  # fmt: skip
    if other is not None:
        ax.plot(record.lrs[other], record.smoothed[other], "x", color="C1",
                label=f"steepest descent {record.lrs[other]:.2e}")  # fmt: skip
    ax.axvline(
        configured, color="0.4", linestyle="--", linewidth=1, label=f"training.learning_rate {configured:.0e}"
    )
    ax.set_xscale("log")
    finite = [v for v in record.smoothed if math.isfinite(v)]
    if finite:  # the diverging tail would squash the interesting part
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 2 * finite[0]) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    flat = too_flat(record.smoothed)
    ax.set_title("LR range test" + (": curve too flat, suggestion unreliable" if flat else ""))
    if flat:
        ax.text(
            0.02, 0.02, textwrap.fill(flat, 70), transform=ax.transAxes, fontsize=7, color="C3", va="bottom"
        )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def report(run_dir: Path, record: Sweep, configured: float) -> float:
    """Write lr_find.csv and lr_find.png, log the suggestion with its rule; returns it (NaN when none)."""
    index, other = valley(record.smoothed), steepest(record.smoothed)
    write_csv(run_dir / "lr_find.csv", record)
    from deepfake.reporting.figures import save_png  # scikit-learn and matplotlib: only when a sweep ran

    save_png(lr_figure(record, index, other, configured), run_dir / "lr_find.png")
    ended = f"stopped early: {record.stop}" if record.stop else "ran every step"
    log.info(
        "LR range test: %d steps from %.1e to %.1e; %s", len(record.lrs), record.lrs[0], record.lrs[-1], ended
    )
    log.info("wrote %s and %s", run_dir / "lr_find.csv", run_dir / "lr_find.png")
    if index is None:
        log.warning(
            "no suggested learning rate: the sweep stopped after %d steps, too few for the rule (it skips the "
            "first tenth and the last %d); raise lr_finder.early_stop_threshold or lower lr_finder.max_lr",
            len(record.lrs), VALLEY_SKIP_END,
        )  # fmt: skip
        return math.nan
    lr = record.lrs[index]
    if (flat := too_flat(record.smoothed)) is not None:
        log.warning("the LR range test curve is %s", flat)
    log.info(
        "suggested learning rate: %.2e, by %s (training.learning_rate is %.2e). Train with: python train.py "
        "training.learning_rate=%.2e ...", lr, RULE, configured, lr,
    )  # fmt: skip
    if other is not None:
        log.info("for comparison, %s: %.2e", STEEPEST, record.lrs[other])
    return lr


def find_lr(cfg: Config | DictConfig | dict) -> float:
    """Run the LR range test for `cfg` and return the suggested learning rate (NaN when there is none)."""
    cfg = to_config(cfg)
    if cfg.resume or cfg.training.auto_resume:
        log.info(
            "find_lr sweeps from the model's initial weights: resume and training.auto_resume do not apply"
        )
        cfg.resume, cfg.training.auto_resume = None, False
    try:
        check_pretrained(cfg.model.architecture, cfg.model.pretrained, cfg.model.weights)
    except UserError:
        discard_fresh_run_dir()
        raise
    ddp = distributed.setup(cfg.hardware.device, cfg.distributed.backend, cfg.distributed.timeout_min)
    handlers: list[logging.Handler] = []
    try:
        cfg, run_dir, _, _, handlers = open_run(cfg, ddp)
        with distributed.quiet_unless_main(ddp):
            finder = LrFinder(cfg, run_dir, ddp)
            finder.setup()
            record = finder.sweep()
            if ddp.is_main:
                with_checkpoints = run_dir / "checkpoints"
                if with_checkpoints.is_dir() and not any(with_checkpoints.iterdir()):
                    with_checkpoints.rmdir()  # _setup_optimization makes it; the sweep saves nothing
            suggestion = report(run_dir, record, cfg.training.learning_rate) if ddp.is_main else math.nan
            finder.hw.free_memory()
            return suggestion
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        ddp.close()
