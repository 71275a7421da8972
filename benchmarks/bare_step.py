"""The reference training step the benchmarks compare against: a hand-written AMP step, nothing more.

Imported by the scripts beside it (`python benchmarks/<script>.py` puts this folder on sys.path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepfake.system.precision import Precision


def bare_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    precision: Precision,
) -> None:
    """Forward, BCE, backward (scaled for fp16), clip to norm 1, optimizer step."""
    scaler = precision.scaler
    with precision.autocast():
        logits = model(images)
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
