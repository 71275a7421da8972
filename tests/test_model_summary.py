"""The model summary of every run: parameters, FLOPs (meta device), memory of weights, gradients and optimizer
state, and where it is written."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepfake.model.detector import get_model
from deepfake.reporting.model_summary import report_summary, summarize


def _tiny() -> nn.Module:
    model = get_model("tiny")
    model.img_size = 32
    return model


def test_summary_counts_parameters_flops_and_adamw_state() -> None:
    model = _tiny()
    for p in model.backbone.parameters():
        p.requires_grad_(False)  # a frozen backbone: only the head is trainable, and only it has state
    optimizer, _ = model.configure_optimizers(learning_rate=1e-3)
    summary = summarize(model, optimizer, 32)

    head = list(model.head.parameters())
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["trainable_parameters"] == sum(p.numel() for p in head) < summary["parameters"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))  # the same count from a real forward
    assert summary["flops_per_image"] == counter.get_total_flops() > 0
    assert summary["input"] == [3, 32, 32] and summary["mean"] == model.mean.flatten().tolist()
    memory = summary["memory_bytes"]
    grads = sum(p.numel() * 4 for p in head)
    assert memory["weights"] == sum(p.numel() * 4 for p in model.parameters())
    assert memory["gradients"] == grads
    # AdamW: exp_avg and exp_avg_sq per trainable parameter, plus a scalar step counter per tensor.
    assert 2 * grads <= memory["optimizer_state"] <= 2 * grads + 8 * len(head)
    assert memory["total"] == memory["weights"] + memory["gradients"] + memory["optimizer_state"]


def test_plain_sgd_has_no_state() -> None:
    model = _tiny()
    optimizer, _ = model.configure_optimizers(learning_rate=1e-3, optimizer=torch.optim.SGD)
    assert summarize(model, optimizer, 32)["memory_bytes"]["optimizer_state"] == 0


class _HostReader(nn.Module):
    """A forward that reads a value on the host: it cannot run on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.float().mean().item() > 0:
            x = x + 1
        return self.linear(x.float().mean((2, 3)))


def test_a_model_that_cannot_run_on_meta_gets_a_note(tmp_path: Path) -> None:
    model = _HostReader()
    summary = summarize(model, torch.optim.AdamW(model.parameters()), 32)
    assert summary["flops_per_image"] is None
    assert summary["flops_note"].startswith("not counted: the forward pass does not run on the meta device")
    assert summary["parameters"] == 4 and model.training  # the mode is restored


class _Texts:
    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.texts[tag] = text


def test_report_writes_the_json_and_the_tensorboard_text(tmp_path: Path) -> None:
    model = _tiny()
    optimizer, _ = model.configure_optimizers(learning_rate=1e-3)
    tb = _Texts()
    summary = report_summary(model, optimizer, 32, tmp_path, tb)  # type: ignore[arg-type]
    assert json.loads((tmp_path / "model_summary.json").read_text()) == summary
    text = tb.texts["model/summary"]
    assert f"| parameters | {summary['parameters']:,} ({summary['parameters']:,} trainable) |" in text
    assert f"| FLOPs per image | {summary['flops_per_image'] / 1e9:.3f} G |" in text
    assert "| AdamW state |" in text and "| input | 3x32x32 uint8" in text
