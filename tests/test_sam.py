"""SAM/ASAM: one loop step equals a hand-written SAM step; fp16 scaling, skipped steps, BatchNorm and state."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepfake.system.precision import Precision
from deepfake.training.engine import LoopConfig, StepContext, TrainState, train_epoch
from deepfake.training.sam import SAM
from deepfake.training.schedulers import create_scheduler

CPU = torch.device("cpu")
FP32 = Precision("cpu", None)
LR, RHO = 0.5, 0.05


class Tiny(nn.Module):
    """A non-linear model, so the gradient at w + e differs from the one at w."""

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 1)
        self.bn = nn.BatchNorm1d(5) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.bn(self.fc1(x)))).squeeze(1)


def batches(n: int, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, 6, generator=g), torch.randint(0, 2, (size,), generator=g), torch.arange(size))
        for _ in range(n)
    ]


def loop_step(model: nn.Module, data: list, adaptive: bool, accum: int, precision: Precision = FP32) -> SAM:
    """One optimizer step (a window of `accum` micro-batches) through the training loop."""
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, adaptive=adaptive, lr=LR)
    loop = LoopConfig(grad_clip_mode="off", accum_steps=accum)
    train_epoch(StepContext(model, opt, precision, CPU), data, TrainState(), loop, len(data))
    return opt


def handwritten_step(model: nn.Module, data: list, adaptive: bool) -> None:
    """SAM's update as in the paper (Foret et al. 2021, Alg. 1; ASAM: Kwon et al. 2021, eq. 7)."""
    x = torch.cat([d[0] for d in data])
    y = torch.cat([d[1] for d in data]).float()
    params = list(model.parameters())

    def grads() -> list[torch.Tensor]:
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        return list(torch.autograd.grad(loss, params))

    g = grads()
    t = [p.detach().abs() if adaptive else torch.ones_like(p) for p in params]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g, strict=True)))
    originals = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, ti, gi in zip(params, t, g, strict=True):
            p.add_(RHO * ti * ti * gi / norm)
    g_sharp = grads()
    with torch.no_grad():
        for p, w, gs in zip(params, originals, g_sharp, strict=True):
            p.copy_(w - LR * gs)


@pytest.mark.parametrize(("adaptive", "accum"), [(False, 1), (True, 1), (False, 2)])
def test_one_loop_step_equals_a_handwritten_sam_step(adaptive: bool, accum: bool) -> None:
    """With accumulation the second pass recomputes the window's micro-batches at w + e: one perturbation per
    optimizer step, from the whole window's gradient (the same as one big batch without BatchNorm)."""
    torch.manual_seed(0)
    model = Tiny()
    reference = copy.deepcopy(model)
    start = copy.deepcopy(model)
    data = batches(accum)
    loop_step(model, data, adaptive, accum)
    handwritten_step(reference, data, adaptive)
    for p, q, w in zip(model.parameters(), reference.parameters(), start.parameters(), strict=True):
        assert not torch.equal(p, w)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # Plain SGD with the same gradient lands elsewhere: the test sees the perturbation.
    plain = copy.deepcopy(start)
    opt = torch.optim.SGD(plain.parameters(), lr=LR)
    train_epoch(
        StepContext(plain, opt, FP32, CPU), data, TrainState(), LoopConfig("off", accum_steps=accum), accum
    )
    assert not torch.allclose(plain.fc1.weight, model.fc1.weight, atol=1e-6)


def test_fp16_grad_scaler_path_matches_fp32_and_updates_the_scale_once() -> None:
    torch.manual_seed(0)
    model = Tiny()
    scaled = copy.deepcopy(model)
    data = batches(2)
    loop_step(model, data, False, 2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    loop_step(scaled, data, False, 2, Precision("cpu", None, scaler))
    for p, q in zip(model.parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert scaler.get_scale() == 2.0**11  # one update per optimizer step (growth_interval=1): grown once


def test_an_overflowing_first_pass_skips_the_step_and_restores_the_weights() -> None:
    """fp16: an inf in the first gradients makes the perturbation NaN, the scaler skips, the weights stay."""
    torch.manual_seed(0)
    model = Tiny()
    start = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    images, labels, index = batches(1)[0]
    images[0, 0] = float("inf")  # an overflow in the first pass's forward
    data = [(images, labels, index)]
    loop_step(model, data, False, 1, Precision("cpu", None, scaler))
    for p, w in zip(model.parameters(), start.parameters(), strict=True):
        assert torch.equal(p, w)
    assert scaler.get_scale() == 2.0**9  # the skipped step backed the scale off


def test_the_second_pass_leaves_batchnorm_statistics_alone() -> None:
    torch.manual_seed(0)
    model = Tiny(bn=True)
    probe = copy.deepcopy(model)
    data = batches(1)
    loop_step(model, data, False, 1)
    probe.train()
    probe(data[0][0])  # one forward at the original weights: the statistics the step must leave
    torch.testing.assert_close(model.bn.running_mean, probe.bn.running_mean)
    torch.testing.assert_close(model.bn.running_var, probe.bn.running_var)
    assert model.bn.momentum == probe.bn.momentum  # put back after the second pass


def test_state_dict_is_the_base_optimizers_and_a_reload_keeps_schedulers_driving_it() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = SAM(model.parameters(), torch.optim.AdamW, rho=RHO, lr=1e-3)
    loop_step_data = batches(1)
    train_epoch(StepContext(model, opt, FP32, CPU), loop_step_data, TrainState(), LoopConfig(), 1)
    saved = opt.state_dict()
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}  # AdamW's, nothing of SAM's
    plain = torch.optim.AdamW(Tiny().parameters(), lr=1e-3)
    plain.load_state_dict(saved)  # a SAM checkpoint fits the bare optimizer, and back
    other = SAM(Tiny().parameters(), torch.optim.AdamW, rho=RHO, lr=1e-3)
    schedule = create_scheduler(other, steps_per_epoch=10, num_epochs=1, name="cosine", warmup_epochs=0)
    other.load_state_dict(saved)
    other.step()  # no gradients: nothing moves, but the schedule sees a step before it
    schedule.step_update()
    assert other.base_optimizer.param_groups is other.param_groups
    assert other.base_optimizer.param_groups[0]["lr"] < 1e-3
    torch.testing.assert_close(other.state_dict()["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])


def test_step_while_perturbed_is_refused() -> None:
    model = Tiny()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    model(torch.randn(2, 6)).sum().backward()
    opt.perturb()
    with pytest.raises(RuntimeError, match="restore"):
        opt.step()


@pytest.mark.slow  # wrapping in DDP takes ~4 s on this CPU
def test_under_ddp_the_first_pass_does_not_all_reduce(tmp_path: Path) -> None:
    """One process group of one: the step equals the plain one, with one all-reduce per step, not two."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = Tiny()
        reference = copy.deepcopy(model)
        wrapped = DistributedDataParallel(model)
        reductions = []

        # No annotations: DDP checks them against dist.GradBucket, and `from __future__` makes them strings.
        def count(state, bucket):
            reductions.append(bucket.index())
            future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        wrapped.register_comm_hook(None, count)
        data = batches(2)
        loop_step(wrapped, data, False, 2)
        loop_step(reference, data, False, 2)
    finally:
        dist.destroy_process_group()
    assert reductions == [0]  # the second pass's last micro-batch only
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)
