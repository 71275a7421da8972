"""The AMP training loop (`train_epoch`) and evaluation pass (`validate`).

The hot loop never reads a device value on the host except at log steps (every `log_every` optimizer
updates and the last of each epoch), so on a GPU the CPU runs ahead and queues kernels; the places that
do sync are marked.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepfake.errors import UserError
from deepfake.model.mask_head import mask_loss
from deepfake.system.precision import Precision
from deepfake.training.sam import SAM, frozen_bn_stats


class NonFiniteLossError(UserError):
    """Raised when the training loss turns NaN/inf and `training.on_nan=stop`."""


@dataclass
class LoopConfig:
    """How the loop steps: clipping, accumulation, the NaN policy, the log cadence and the BCE class weight."""

    grad_clip_mode: str = "norm"
    grad_clip_max: float = 1.0
    accum_steps: int = 1
    on_nan: str = "stop"
    log_every: int = 20
    pos_weight: float | None = None  # BCE weight of the fake class (data.balance=pos_weight)
    mask_loss: str = "bce"  # model.mask_head's loss: bce | dice
    mask_loss_weight: float = 1.0

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> LoopConfig:
        """From a run config's `training` section; `overrides` replace single fields (the pre-flight's
        single step logs every step, the runner adds the data's `pos_weight`)."""
        tc = cfg.training
        loop = cls(
            grad_clip_mode=tc.grad_clip.mode,
            grad_clip_max=tc.grad_clip.max,
            accum_steps=tc.grad_accum_steps,
            on_nan=tc.on_nan,
            log_every=tc.log_every_n_steps,
            mask_loss=tc.mask_loss,
            mask_loss_weight=tc.mask_loss_weight,
        )
        return replace(loop, **overrides)


@dataclass
class TrainState:
    """Counters a checkpoint must carry for an exact resume."""

    epoch: int = 0
    global_step: int = 0  # optimizer updates so far: the x-axis of every TensorBoard curve
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    skipped_steps: int = 0

    def state_dict(self) -> dict[str, int]:
        """The counters as a checkpoint's `train_state` stores them (the runner adds the run's shape)."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's `train_state` (files older than `skipped_steps` count none)."""
        self.epoch, self.global_step = saved["epoch"], saved["global_step"]
        self.batch_in_epoch, self.skipped_steps = saved["batch_in_epoch"], saved.get("skipped_steps", 0)


@dataclass
class StepContext:
    """What an optimizer step touches besides the batch; built once per run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    device: torch.device
    scheduler: Any = None  # deepfake.training.schedulers.Schedule: `step_update` per step
    ema: Any = None  # timm's ModelEmaV3, updated after each step
    backbone: Any = None  # deepfake.training.freezing.BackboneSchedule: the backbone's LR warm restart


def _no_log(step: int, values: dict[str, float]) -> None:
    """The default `log` hook: nothing listens."""


def _no_step(state: TrainState) -> None:
    """The default `on_step` hook."""


def _never(global_step: int) -> bool:
    """The default `should_stop` hook."""
    return False


@dataclass
class EpochHooks:
    """Where the loop reports: `log` at log steps (values read from the device), `on_step` after each
    optimizer update, and `should_stop` asked after each update."""

    log: Callable[[int, dict[str, float]], None] = _no_log
    on_step: Callable[[TrainState], None] = _no_step
    should_stop: Callable[[int], bool] = _never


class _Meter:
    """The epoch's running sums, kept on the device until a log step (or the epoch's end) reads them."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), device=device, dtype=torch.int64)
        self.skipped = torch.zeros((), device=device, dtype=torch.int64)
        self.window_loss = torch.zeros((), device=device)
        self.window_batches = 0
        self.micro = 0
        self.seen = 0
        self.t_epoch = self.t_log = time.perf_counter()
        self.seen_at_log = 0

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.nonfinite += ~torch.isfinite(loss)
        self.loss_sum += loss
        self.window_loss += loss
        self.window_batches += 1
        self.micro += 1
        self.seen += images

    def close_window(self) -> None:
        self.window_loss.zero_()
        self.window_batches = 0

    def read(self, ctx: StepContext, state: TrainState, grad_norm: torch.Tensor | None) -> dict[str, float]:
        """Sync point: the only per-step host reads, every `log_every` updates and at the epoch's end."""
        now = time.perf_counter()
        values = {
            "train/loss": (self.window_loss / self.window_batches).item(),
            "train/lr": ctx.optimizer.param_groups[0]["lr"],
            "train/img_per_s": (self.seen - self.seen_at_log) / max(now - self.t_log, 1e-9),
        }
        if grad_norm is not None:
            values["train/grad_norm"] = grad_norm.item()
        if ctx.precision.scaler is not None:
            values["train/skipped_steps"] = float(state.skipped_steps + self.skipped.item())
        self.t_log, self.seen_at_log = now, self.seen
        return values

    def summary(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t_epoch
        return {
            "train/epoch_loss": (self.loss_sum / self.micro).item() if self.micro else math.nan,
            "train/epoch_img_per_s": self.seen / max(elapsed, 1e-9),
            "train/epoch_time_s": elapsed,
        }


def _grad_norm(params: list[nn.Parameter], mode: str, max_value: float) -> torch.Tensor | None:
    """Clip as configured; return the total (pre-clip) norm as a device tensor, or None if not computed."""
    if mode == "norm":
        return torch.nn.utils.clip_grad_norm_(params, max_value)
    if mode == "value":
        torch.nn.utils.clip_grad_value_(params, max_value)
    return None


def _backward(
    ctx: StepContext,
    images: torch.Tensor,
    labels: torch.Tensor,
    window_len: int,
    sync: bool,
    pos_weight: torch.Tensor | None,
    loop: LoopConfig,
) -> torch.Tensor:
    """Forward and backward one micro-batch; returns its (unscaled) loss. DDP all-reduces only when `sync`."""
    model, scaler = ctx.model, ctx.precision.scaler
    no_sync = not sync and hasattr(model, "no_sync")
    with model.no_sync() if no_sync else contextlib.nullcontext():
        with ctx.precision.autocast():
            logits = model(images)
        masks = None
        if isinstance(logits, tuple):  # model.mask_head: the batch's fourth channel holds the blend masks
            logits, masks = logits
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=pos_weight)
        if masks is not None:
            loss = loss + loop.mask_loss_weight * mask_loss(masks, images[:, 3:], loop.mask_loss)
        scaled = loss / window_len
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return loss.detach()


def _sam_second_pass(
    ctx: StepContext,
    window: list[tuple[torch.Tensor, torch.Tensor]],
    pos_weight: torch.Tensor | None,
    loop: LoopConfig,
) -> None:
    """SAM: perturb with the window's (local) gradients, recompute the window's gradients there, restore.

    Under DDP the first pass never all-reduces (each rank perturbs with its own gradient, as in the paper's
    m-sharpness); this pass all-reduces once, on its last micro-batch. BatchNorm statistics are not updated
    here: the first pass already counted these batches.
    """
    optimizer: SAM = ctx.optimizer  # type: ignore[assignment]
    optimizer.perturb()
    with frozen_bn_stats(ctx.model):
        for i, (images, labels) in enumerate(window):
            _backward(ctx, images, labels, len(window), i == len(window) - 1, pos_weight, loop)
    optimizer.restore()


def _optimizer_step(
    ctx: StepContext,
    loop: LoopConfig,
    params: list[nn.Parameter],
    meter: _Meter,
    is_log_step: bool,
    global_step: int = 0,
    sam_window: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """(SAM: the second pass,) unscale, clip, step (fp16: the scaler skips inf/NaN updates), schedule;
    returns the norm of the applied gradient."""
    scaler = ctx.precision.scaler
    if sam_window is not None:
        _sam_second_pass(ctx, sam_window, pos_weight, loop)
    if scaler is not None:
        scaler.unscale_(ctx.optimizer)
    grad_norm = _grad_norm(params, loop.grad_clip_mode, loop.grad_clip_max)
    if grad_norm is None and is_log_step:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, math.inf)
    warm = ctx.backbone.warm_lr(ctx.optimizer, global_step) if ctx.backbone else contextlib.nullcontext()
    with warm:
        if scaler is not None:
            scale_before = scaler._get_scale_async().clone()
            scaler.step(ctx.optimizer)  # skips the update when the unscaled gradients hold inf/NaN
            scaler.update()
            meter.skipped += scaler._get_scale_async() < scale_before
        else:
            ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.scheduler is not None:
        ctx.scheduler.step_update()
    return grad_norm


def train_epoch(
    ctx: StepContext,
    loader: Iterable,
    state: TrainState,
    loop: LoopConfig,
    num_batches: int,
    hooks: EpochHooks | None = None,
) -> dict[str, float]:
    """Run one epoch (or its remainder after a resume) and return its mean loss and throughput.

    `num_batches` is the full epoch's micro-batch count, so accumulation windows line up on resume; the
    last window of an epoch may be short, and its loss is scaled by its own length.
    """
    hooks = hooks or EpochHooks()
    ctx.model.train()
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    meter = _Meter(ctx.device)
    pos_weight = None if loop.pos_weight is None else torch.tensor(loop.pos_weight, device=ctx.device)
    sam = isinstance(ctx.optimizer, SAM)
    window: list[tuple[torch.Tensor, torch.Tensor]] = []  # SAM: the window's micro-batches, for its 2nd pass
    for batch in loader:
        window_start = (state.batch_in_epoch // loop.accum_steps) * loop.accum_steps
        window_len = min(loop.accum_steps, num_batches - window_start)
        steps_now = (state.batch_in_epoch + 1 - window_start) == window_len
        images, labels, _ = move_batch(batch, ctx.device)
        loss = _backward(ctx, images, labels, window_len, steps_now and not sam, pos_weight, loop)
        meter.add(loss, images.shape[0])
        if sam:
            window.append((images, labels))
        state.batch_in_epoch += 1
        if not steps_now:
            continue
        sam_window, window = (window if sam else None), []
        if loop.on_nan == "skip" and not _all_finite(meter.window_loss):  # sync: only in skip mode
            ctx.optimizer.zero_grad(set_to_none=True)
            state.skipped_steps += 1
            meter.close_window()
            continue
        # The epoch's last step is logged too (a run shorter than `log_every` still has curves): the epoch's
        # end syncs anyway, so this adds no host read the loop would not make.
        is_log_step = (state.global_step + 1) % loop.log_every == 0 or state.batch_in_epoch == num_batches
        grad_norm = _optimizer_step(
            ctx, loop, params, meter, is_log_step, state.global_step, sam_window, pos_weight
        )
        state.global_step += 1
        if ctx.ema is not None:
            ctx.ema.update(ctx.model, step=state.global_step)
        if is_log_step:
            hooks.log(state.global_step, meter.read(ctx, state, grad_norm))
            _check_finite(meter.nonfinite, loop.on_nan, state)
        meter.close_window()
        hooks.on_step(state)
        if hooks.should_stop(state.global_step):
            break
    _check_finite(meter.nonfinite, loop.on_nan, state)
    state.skipped_steps += int(meter.skipped.item())
    return meter.summary()


def _all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process: under DDP all ranks must skip the same steps."""
    bad = (~torch.isfinite(loss)).to(torch.int32)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return not bad.item()


def _check_finite(nonfinite: torch.Tensor, on_nan: str, state: TrainState) -> None:
    if on_nan == "stop" and int(nonfinite.item()) > 0:
        raise NonFiniteLossError(
            f"training loss became NaN/inf at epoch {state.epoch}, step {state.global_step}; the run stopped "
            "and the last good checkpoint is kept. Lower training.learning_rate, keep training.grad_clip on, "
            "or set training.amp=bf16 (fp16 overflows more easily); training.on_nan=skip skips such steps."
        )


def move_batch(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copy images (still uint8) and labels to the device; non_blocking overlaps with compute when pinned."""
    images, labels, index = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True), index
