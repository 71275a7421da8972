"""GPU memory: a clear out-of-memory message, and finding the largest batch that fits.

An OOM deep inside a run is the most common way a first run on a new GPU fails; the user needs the batch
size, the peak memory and what to change, not a CUDA traceback.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepfake.errors import UserError
from deepfake.model.temporal import clip_length
from deepfake.system.precision import Precision

log = logging.getLogger("deepfake.memory")  # the name train.log has always shown


def free_memory(device: torch.device) -> None:
    """Release cached blocks between phases (after a failed probe, between train and eval)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def oom_message(batch_size: int, device: torch.device) -> str:
    peak = ""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        peak = f" (peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} of {total:.1f} GiB)"
    return (
        f"out of GPU memory at training.batch_size={batch_size}{peak}. Lower training.batch_size (and raise "
        f"training.grad_accum_steps to keep the effective batch), use training.amp=bf16 or fp16, "
        f"model.grad_checkpointing=true, a smaller model.img_size, or set training.auto_batch_size=true."
    )


class OutOfMemory(UserError):
    """CUDA ran out of memory; the message says what to change."""


def probe_step(
    model: nn.Module, precision: Precision, device: torch.device, img_size: int
) -> Callable[[int], None]:
    """One forward/backward pass at a batch size on random uint8 input: what a training step allocates."""

    # model.mask_head: training batches carry the mask channel, and the decoder's activations count too.
    channels = 4 if getattr(model, "mask_decoder", None) is not None else 3

    def step(batch_size: int) -> None:
        frames = clip_length(model)  # a clip model takes batch_size // T clips of T frames
        shape = (max(1, batch_size // frames), frames) if frames > 1 else (batch_size,)
        images = torch.randint(
            0, 256, (*shape, channels, img_size, img_size), dtype=torch.uint8, device=device
        )
        labels = torch.randint(0, 2, shape[:1], device=device).float()
        with precision.autocast():
            out = model(images)
        logits, masks = out if isinstance(out, tuple) else (out, None)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        (loss if masks is None else loss + masks.float().mean()).backward()
        model.zero_grad(set_to_none=True)

    return step


def fit_batch_size(
    step: Callable[[int], None], batch_size: int, device: torch.device, min_size: int = 1
) -> int:
    """Halve `batch_size` until `step(batch_size)` runs without CUDA OOM; return the size that fitted."""
    size = batch_size
    while True:
        try:
            step(size)
            return size
        except torch.cuda.OutOfMemoryError:
            free_memory(device)
            if size // 2 < min_size:
                raise OutOfMemory(oom_message(size, device)) from None
            log.warning("batch %d does not fit in GPU memory; trying %d", size, size // 2)
            size //= 2
