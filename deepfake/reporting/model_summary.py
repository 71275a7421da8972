"""The model summary every run starts with: parameters, FLOPs at the input size, the input's normalisation and
the memory of weights, gradients and optimizer state; logged, saved as `<run dir>/model_summary.json` and
shown in TensorBoard's Text tab.

Both measurements run on the meta device: shapes without storage or arithmetic, so they cost milliseconds and
no memory whatever the model, and they draw no random numbers (an exact resume replays the same ones).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.runs.fileio import atomic_write

log = logging.getLogger("deepfake")
FILE = "model_summary.json"


def _nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _Eager(nn.Module):
    """Calls the model's `forward` itself: a model compiled in place (`model.compile=true`) is not compiled
    again, for meta tensors, just to be counted."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward(x)


def count_flops(model: nn.Module, img_size: int) -> tuple[int | None, str | None]:
    """FLOPs of one forward pass of one uint8 image (FlopCounterMode: 2 per multiply-add), or (None, why not)."""
    eager = _Eager(model)
    tensors = (*eager.named_parameters(), *eager.named_buffers())
    state = {name: torch.empty_like(t, device="meta") for name, t in tensors}
    image = torch.empty(1, 3, img_size, img_size, dtype=torch.uint8, device="meta")
    training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            functional_call(eager, state, (image,))
        return int(counter.get_total_flops()), None
    except Exception as e:  # any model whose forward the meta device cannot run: the summary says so
        return (
            None,
            f"not counted: the forward pass does not run on the meta device ({type(e).__name__}: {e})",
        )
    finally:
        model.train(training)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> tuple[int | None, str | None]:
    """The bytes the optimizer's state will take once it has stepped (it is empty until then), measured by one
    step of the same optimizer class and groups on meta copies of the parameters; or (None, why not)."""
    groups = [
        {**group, "params": [torch.empty_like(p, device="meta") for p in group["params"]]}
        for group in optimizer.param_groups
    ]
    try:
        meta = type(optimizer)(groups)  # each group carries its own settings (lr, betas, momentum...)
        for group in meta.param_groups:
            for p in group["params"]:
                p.grad = torch.empty_like(p)
        meta.step()
    except Exception as e:  # an optimizer that cannot be rebuilt this way (a wrapper) or stepped on meta
        return (
            None,
            f"not measured: {type(optimizer).__name__} does not step on the meta device ({type(e).__name__})",
        )
    return _nbytes(v for state in meta.state.values() for v in state.values() if torch.is_tensor(v)), None


def summarize(model: nn.Module, optimizer: torch.optim.Optimizer, img_size: int) -> dict[str, Any]:
    """The summary as a JSON-ready dict (the keys model_summary.json holds)."""
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    flops, flops_note = count_flops(model, img_size)
    state, state_note = optimizer_state_bytes(optimizer)
    weights, grads = _nbytes(params), _nbytes(trainable)
    mean = getattr(model, "mean", None)
    std = getattr(model, "std", None)
    return {
        "architecture": getattr(model, "display_name", type(model).__name__),
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "input": [3, img_size, img_size],
        "mean": mean.flatten().tolist() if mean is not None else None,
        "std": std.flatten().tolist() if std is not None else None,
        "flops_per_image": flops,
        "flops_note": flops_note,
        "optimizer": type(optimizer).__name__,
        "memory_bytes": {
            "weights": weights,
            "gradients": grads,
            "optimizer_state": state,
            "total": weights + grads + (state or 0),
        },
        "optimizer_state_note": state_note,
    }


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def format_summary(s: dict[str, Any]) -> str:
    """Markdown lines: the log shows them as text, TensorBoard's Text tab renders them."""
    flops = s["flops_per_image"]
    mem = s["memory_bytes"]
    rows = [
        ("architecture", s["architecture"]),
        ("parameters", f"{s['parameters']:,} ({s['trainable_parameters']:,} trainable)"),
        ("FLOPs per image", f"{flops / 1e9:.3f} G" if flops is not None else s["flops_note"]),
        ("input", f"{'x'.join(map(str, s['input']))} uint8, mean {_round(s['mean'])}, std {_round(s['std'])}"),
        ("weights", _mb(mem["weights"])),
        ("gradients", _mb(mem["gradients"])),
        (f"{s['optimizer']} state", _mb(mem["optimizer_state"]) if mem["optimizer_state"] is not None else s["optimizer_state_note"]),
        ("total (weights + gradients + state)", _mb(mem["total"])),
    ]  # fmt: skip
    return "\n".join(["| model summary | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _round(values: list[float] | None) -> str:
    return "?" if values is None else "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def report_summary(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    img_size: int,
    run_dir: Path,
    tb: TensorBoardLogger,
    step: int = 0,
) -> dict[str, Any]:
    """Log the summary and write it to `<run dir>/model_summary.json` and TensorBoard (tag `model/summary`, at
    `step`: a resumed run's first step, so it survives the resume's purge of later events)."""
    summary = summarize(model, optimizer, img_size)
    text = format_summary(summary)
    log.info("%s", text)
    atomic_write(run_dir / FILE, lambda f: f.write(json.dumps(summary, indent=2).encode()))
    tb.text("model/summary", text, step)
    return summary
