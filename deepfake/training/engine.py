"""The AMP training loop (`train_epoch`) and evaluation pass (`validate`).

The hot loop never reads a device value on the host except at log steps (every `log_every` optimizer
updates and the last of each epoch), so on a GPU the CPU runs ahead and queues kernels; the places that
do sync are marked.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepfake.data.module import move_batch
from deepfake.errors import UserError


class NonFiniteLossError(UserError):
    """Raised when the training loss turns NaN/inf and `training.on_nan=stop`."""


@dataclass
class Precision:
    """Autocast settings for one device: `dtype=None` means full fp32; a scaler is used for fp16 only."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]


@dataclass
class LoopConfig:
    grad_clip_mode: str = "norm"
    grad_clip_max: float = 1.0
    accum_steps: int = 1
    on_nan: str = "stop"
    log_every: int = 20
    pos_weight: float | None = None  # BCE weight of the fake class (data.balance=pos_weight)


@dataclass
class TrainState:
    """Counters a checkpoint must carry for an exact resume."""

    epoch: int = 0
    global_step: int = 0  # optimizer updates so far: the x-axis of every TensorBoard curve
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    skipped_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _grad_norm(params: list[nn.Parameter], mode: str, max_value: float) -> torch.Tensor | None:
    """Clip as configured; return the total (pre-clip) norm as a device tensor, or None if not computed."""
    if mode == "norm":
        return torch.nn.utils.clip_grad_norm_(params, max_value)
    if mode == "value":
        torch.nn.utils.clip_grad_value_(params, max_value)
    return None


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: Precision,
    state: TrainState,
    loop: LoopConfig,
    device: torch.device,
    num_batches: int,
    log: Callable[[int, dict[str, float]], None] = lambda step, values: None,
    ema: Any = None,
    should_stop: Callable[[int], bool] = lambda global_step: False,
    on_step: Callable[[TrainState], None] = lambda state: None,
) -> dict[str, float]:
    """Run one epoch (or its remainder after a resume) and return its mean loss and throughput.

    `num_batches` is the full epoch's micro-batch count, so accumulation windows line up on resume; the
    last window of an epoch may be short, and its loss is scaled by its own length.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = precision.scaler
    accum = loop.accum_steps
    loss_sum = torch.zeros((), device=device)
    nonfinite = torch.zeros((), device=device, dtype=torch.int64)
    skipped = torch.zeros((), device=device, dtype=torch.int64)
    window_loss = torch.zeros((), device=device)
    window_batches = 0
    micro = 0
    seen = 0
    t_epoch = t_log = time.perf_counter()
    seen_at_log = 0
    grad_norm: torch.Tensor | None = None
    pos_weight = None if loop.pos_weight is None else torch.tensor(loop.pos_weight, device=device)

    for batch in loader:
        i = state.batch_in_epoch
        window_start = (i // accum) * accum
        window_len = min(accum, num_batches - window_start)
        steps_now = (i + 1 - window_start) == window_len
        images, labels, _ = move_batch(batch, device)
        sync_ctx = (
            model.no_sync() if (not steps_now and hasattr(model, "no_sync")) else contextlib.nullcontext()
        )
        with sync_ctx:
            with precision.autocast():
                logits = model(images)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=pos_weight)
            scaled = loss / window_len
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_detached = loss.detach()
        nonfinite += ~torch.isfinite(loss_detached)
        loss_sum += loss_detached
        window_loss += loss_detached
        window_batches += 1
        micro += 1
        seen += images.shape[0]
        state.batch_in_epoch += 1
        if not steps_now:
            continue

        if loop.on_nan == "skip" and not _all_finite(window_loss):  # sync: only in skip mode
            optimizer.zero_grad(set_to_none=True)
            state.skipped_steps += 1
            window_loss.zero_()
            window_batches = 0
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = _grad_norm(params, loop.grad_clip_mode, loop.grad_clip_max)
        # The epoch's last step is logged too (a run shorter than `log_every` still has curves): the epoch's
        # end syncs anyway, so this adds no host read the loop would not make.
        is_log_step = (state.global_step + 1) % loop.log_every == 0 or state.batch_in_epoch == num_batches
        if grad_norm is None and is_log_step:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, math.inf)
        if scaler is not None:
            scale_before = scaler._get_scale_async().clone()
            scaler.step(optimizer)  # skips the update when the unscaled gradients hold inf/NaN
            scaler.update()
            skipped += scaler._get_scale_async() < scale_before
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step_update()
        state.global_step += 1
        if ema is not None:
            ema.update(model, step=state.global_step)

        if is_log_step:
            # Sync point: the only per-step host reads happen here, every `log_every` updates and at epoch end.
            now = time.perf_counter()
            values = {
                "train/loss": (window_loss / window_batches).item(),
                "train/lr": optimizer.param_groups[0]["lr"],
                "train/img_per_s": (seen - seen_at_log) / max(now - t_log, 1e-9),
            }
            if grad_norm is not None:
                values["train/grad_norm"] = grad_norm.item()
            if scaler is not None:
                values["train/skipped_steps"] = float(state.skipped_steps + skipped.item())
            t_log, seen_at_log = now, seen
            log(state.global_step, values)
            _check_finite(nonfinite, loop.on_nan, state)
        window_loss.zero_()
        window_batches = 0
        on_step(state)
        if should_stop(state.global_step):
            break

    _check_finite(nonfinite, loop.on_nan, state)
    state.skipped_steps += int(skipped.item())
    elapsed = time.perf_counter() - t_epoch
    return {
        "train/epoch_loss": (loss_sum / micro).item() if micro else math.nan,
        "train/epoch_img_per_s": seen / max(elapsed, 1e-9),
        "train/epoch_time_s": elapsed,
    }


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


@torch.no_grad()
def validate(
    model: nn.Module, loader: Iterable, precision: Precision, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict a whole split; returns (labels, fake probabilities, dataset indices) in loader order."""
    model.eval()
    probs, labels, indices = [], [], []
    for batch in loader:
        images, y, index = move_batch(batch, device)
        with precision.autocast():
            logits = model(images)
        probs.append(torch.sigmoid(logits.float()))
        labels.append(y)
        indices.append(index)
    if not probs:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64)
    # Sync point: one transfer of the split's predictions at the end of the pass.
    return (
        torch.cat(labels).cpu().numpy(),
        torch.cat(probs).double().cpu().numpy(),
        torch.cat(indices).cpu().numpy(),
    )
