"""Training-control features, each tested so that removing it fails a test."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from timm.utils import ModelEmaV3
from torch import nn

from deepfake.system.precision import Precision
from deepfake.training.early_stopping import EarlyStopping
from deepfake.training.engine import (
    EpochHooks,
    LoopConfig,
    NonFiniteLossError,
    StepContext,
    TrainState,
    train_epoch,
)
from deepfake.training.schedulers import create_scheduler

CPU = torch.device("cpu")
FP32 = Precision("cpu", None)


class Linear(nn.Module):
    """No batch-dependent layers, so accumulation must match a big batch exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.float().div(255).flatten(1)).squeeze(1)


def batches(n: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n * size, 3, 4, 4), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 2, (n * size,), generator=g)
    return [
        (images[i : i + size], labels[i : i + size], torch.arange(i, i + size))
        for i in range(0, n * size, size)
    ]


def run(
    model: nn.Module, data: list, loop: LoopConfig, lr: float = 0.1, ema: Any = None, **hooks
) -> TrainState:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    state = TrainState()
    train_epoch(
        StepContext(model, opt, FP32, CPU, ema=ema), data, state, loop, len(data), EpochHooks(**hooks)
    )
    return state


def test_accumulation_equals_one_big_batch() -> None:
    torch.manual_seed(0)
    a = Linear()
    b = copy.deepcopy(a)
    data = batches(8, 4)
    big = [
        (torch.cat([d[0] for d in data[i : i + 4]]), torch.cat([d[1] for d in data[i : i + 4]]), None)
        for i in (0, 4)
    ]
    state = run(a, data, LoopConfig(grad_clip_mode="off", accum_steps=4))
    run(b, big, LoopConfig(grad_clip_mode="off", accum_steps=1))
    assert state.global_step == 2
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_short_last_window_still_steps_with_its_own_scale() -> None:
    torch.manual_seed(0)
    a = Linear()
    b = copy.deepcopy(a)
    data = batches(6, 4)  # windows of 4 + 2
    state = run(a, data, LoopConfig(grad_clip_mode="off", accum_steps=4))
    assert state.global_step == 2
    big = [
        (torch.cat([d[0] for d in part]), torch.cat([d[1] for d in part]), None)
        for part in (data[:4], data[4:])
    ]
    run(b, big, LoopConfig(grad_clip_mode="off"))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize(("mode", "limit"), [("norm", 0.01), ("value", 0.001)])
def test_clipping_bounds_the_applied_gradient(mode: str, limit: float) -> None:
    torch.manual_seed(0)
    model = Linear()
    before = [p.detach().clone() for p in model.parameters()]
    run(model, batches(1, 16), LoopConfig(grad_clip_mode=mode, grad_clip_max=limit), lr=1.0)
    deltas = [
        (p.detach() - q) for p, q in zip(model.parameters(), before, strict=True)
    ]  # = -grad with SGD lr 1
    if mode == "norm":
        total = torch.sqrt(sum((d**2).sum() for d in deltas))
        assert total <= limit * (1 + 1e-5)
        assert total >= limit * 0.99  # it was clipped, not just small
    else:
        assert max(d.abs().max() for d in deltas) <= limit * (1 + 1e-4)
        assert max(d.abs().max() for d in deltas) >= limit * 0.99


def test_grad_norm_and_lr_are_logged_only_at_log_steps() -> None:
    logged: list[tuple[int, dict]] = []
    run(Linear(), batches(6, 4), LoopConfig(log_every=2), log=lambda s, v: logged.append((s, v)))
    assert [s for s, _ in logged] == [2, 4, 6]
    assert all(v["train/grad_norm"] > 0 and v["train/lr"] == 0.1 for _, v in logged)


def _lrs(name: str, steps: int, **kw) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(opt, steps_per_epoch=10, num_epochs=steps // 10, name=name, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step_update()
    return out


def test_cosine_with_linear_warmup_follows_the_curve() -> None:
    lrs = _lrs("cosine", 100, warmup_steps=10, warmup_start_factor=0.1, min_lr=0.0)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[99] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_step_multistep_constant_and_onecycle() -> None:
    step = _lrs("step", 40, warmup_epochs=0, step_epochs=1.0, gamma=0.5)
    assert (
        step[9] == pytest.approx(1.0) and step[10] == pytest.approx(0.5) and step[25] == pytest.approx(0.25)
    )
    multi = _lrs(
        "multistep", 40, warmup_epochs=1.0, milestones=[2.0, 3.0], gamma=0.1, warmup_start_factor=0.5
    )
    assert multi[0] == pytest.approx(0.5) and multi[15] == pytest.approx(1.0)
    assert multi[20] == pytest.approx(0.1) and multi[30] == pytest.approx(0.01)
    const = _lrs("constant", 30, warmup_steps=5, warmup_start_factor=0.2)
    assert const[0] == pytest.approx(0.2) and const[5:] == pytest.approx([1.0] * 25)
    one = _lrs("onecycle", 100, warmup_steps=20, warmup_start_factor=0.1, min_lr=1e-4)
    assert one[0] == pytest.approx(0.1) and one[20] == pytest.approx(1.0, rel=1e-3)
    assert one[-1] < 0.01


def test_plateau_warms_up_per_step_then_decays_per_epoch() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(
        opt, steps_per_epoch=10, num_epochs=10, name="plateau", warmup_steps=10, gamma=0.5, plateau_patience=1
    )
    for _ in range(10):
        opt.step()
        sched.step_update()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    for metric in (0.8, 0.7, 0.7, 0.7):  # no improvement after the first epoch
        sched.step_epoch(metric)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    for _ in range(5):
        sched.step_update()  # per-step updates no longer move the lr
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_early_stopping_on_a_scripted_sequence() -> None:
    es = EarlyStopping("val/auc", mode="max", patience=2, min_delta=0.01)
    seq = [0.70, 0.80, 0.805, 0.79, 0.90]
    stopped_at = next(epoch for epoch, v in enumerate(seq, start=1) if es.step({"val/auc": v}, epoch))
    assert stopped_at == 4  # epochs 3 and 4 fail to beat 0.80 by more than 0.01
    assert es.best == 0.80 and es.best_epoch == 2 and "best 0.8000 at epoch 2" in es.reason
    es_min = EarlyStopping("val/loss", mode="min", patience=1)
    assert [es_min.step({"val/loss": v}, e) for e, v in enumerate([0.5, 0.4, 0.45], 1)] == [
        False,
        False,
        True,
    ]


class NaNOnCall(nn.Module):
    """Wraps a model; its output turns NaN on the `bad`-th forward call only."""

    def __init__(self, inner: nn.Module, bad: int) -> None:
        super().__init__()
        self.inner = inner
        self.bad = bad
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.inner(x)
        return out * float("nan") if self.calls == self.bad else out


def test_nan_loss_stops_with_a_message() -> None:
    with pytest.raises(NonFiniteLossError, match="NaN/inf"):
        run(NaNOnCall(Linear(), bad=2), batches(4, 4), LoopConfig(log_every=100))


def test_nan_skip_mode_skips_the_update() -> None:
    model = Linear()
    state = run(NaNOnCall(model, bad=1), batches(3, 4), LoopConfig(on_nan="skip"))
    assert state.skipped_steps == 1 and state.global_step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_ema_differs_from_raw_weights_and_follows_the_decay() -> None:
    torch.manual_seed(0)
    model = Linear()
    ema = ModelEmaV3(model, decay=0.9, use_warmup=False)
    snapshots: list[list[torch.Tensor]] = []
    run(
        model,
        batches(2, 8),
        LoopConfig(grad_clip_mode="off"),
        ema=ema,
        on_step=lambda state: snapshots.append([p.detach().clone() for p in model.parameters()]),
    )
    w1, w2 = snapshots
    # timm semantics: the first update copies the weights, later ones blend with `decay`.
    for e, a, b in zip(ema.module.parameters(), w1, w2, strict=True):
        assert not torch.equal(e, b)
        assert torch.allclose(e, 0.9 * a + 0.1 * b, atol=1e-6)


def test_fit_batch_size_halves_until_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake.training import memory
    from deepfake.training.memory import OutOfMemory, fit_batch_size

    freed: list[torch.device] = []  # the real free_memory is a full gc.collect(): ~0.4 s on the test's heap
    monkeypatch.setattr(memory, "free_memory", freed.append)
    tried: list[int] = []

    def step(size: int) -> None:
        tried.append(size)
        if size > 24:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert fit_batch_size(step, 128, CPU) == 16
    assert tried == [128, 64, 32, 16]
    assert freed == [CPU] * 3  # memory is freed after each failed try

    def never(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemory, match=r"training.batch_size=1\b.*training.grad_accum_steps"):
        fit_batch_size(never, 4, CPU)


@pytest.mark.slow
def test_nan_guard_stops_the_run_and_keeps_the_last_good_checkpoint(
    compose_cfg, folder_dataset, tmp_path, monkeypatch
) -> None:
    """Epoch 1 trains normally; the loss turns NaN in epoch 2: the run stops, last.pt stays epoch 1's."""
    import json

    import torch.nn.functional as F

    from deepfake.training.runner import train
    from tests.conftest import FAST

    real_bce = F.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def bce(logits, target, *args, **kwargs):
        calls["n"] += 1
        loss = real_bce(logits, target, *args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss  # 3 batches of 8 = epoch 1

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", bce)
    cfg = compose_cfg([*FAST, "data=folder", f"data.root={folder_dataset}", f"base_path={tmp_path}"])
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept"):
        train(cfg)
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stop_reason"].startswith("failed: NonFiniteLossError")
