"""`Precision`: the autocast dtype (and fp16's GradScaler) one device trains and scores with.

It sits in `system` because the hardware manager chooses it and both the training engine and evaluation use it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


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
