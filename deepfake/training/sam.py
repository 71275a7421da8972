"""Sharpness-aware minimisation (Foret et al., ICLR 2021) and its adaptive form ASAM (Kwon et al., ICML 2021).

`SAM` wraps any torch optimizer. An update takes two gradient passes: the first gradient g moves the weights to
w + e, e = rho * T^2 g / ||T g|| (T = |w| for ASAM, the identity otherwise), the second gradient is taken there,
and the base optimizer applies it at the original w. The training loop (`deepfake.training.engine`) runs the
passes: `perturb()` after the first, `restore()` after the second, then `step()`, which is the base optimizer's.

The perturbation is invariant to a uniform scaling of the gradient, so under fp16 the first pass's gradients need
no unscaling: GradScaler's single unscale, step and update act on the second pass's gradients, the ones applied.
A non-finite first gradient makes the whole perturbation NaN (no host sync to check it), so the second
gradients are non-finite too and the scaler skips the step (`restore()` puts the original weights back first).

The wrapper shares the base optimizer's parameter groups and state, so LR schedulers drive it like any optimizer
and its `state_dict()` is the base optimizer's: a checkpoint resumes exactly, with or without SAM. Written after
the reference implementation github.com/davda54/sam (MIT), with the weights restored from a copy, not by
subtracting e, so a step is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

#: Added to ||T g|| so a zero gradient perturbs by nothing rather than dividing by zero (the reference's value).
EPS = 1e-12


class SAM(torch.optim.Optimizer):
    """`SAM(params, torch.optim.SGD, rho=0.05, adaptive=False, lr=0.1, momentum=0.9)`: the base optimizer is
    built from `params` and the remaining keyword arguments (the signature of the reference implementation)."""

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: Callable[..., torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **kwargs: Any,
    ) -> None:
        if rho <= 0:
            raise ValueError(f"SAM's rho must be > 0 (got {rho})")
        self.base_optimizer = base_optimizer(params, **kwargs)
        super().__init__(self.base_optimizer.param_groups, self.base_optimizer.defaults)
        self.rho, self.adaptive = rho, adaptive
        self._share_base()
        self._saved: dict[torch.Tensor, torch.Tensor] = {}  # original weights while perturbed

    def _share_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def _with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def perturb(self) -> None:
        """Move every parameter with a gradient to w + e (ascent step), keep w, and clear the gradients."""
        params = self._with_grad()
        if not params:
            return
        scaled = [(p.abs() * p.grad if self.adaptive else p.grad) for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in scaled]))
        factor = self.rho / (norm + EPS)
        factor = torch.where(torch.isfinite(norm), factor, torch.full_like(factor, float("nan")))
        for p, g in zip(params, scaled, strict=True):
            self._saved[p] = p.detach().clone()
            p.add_((g * p.abs() if self.adaptive else g) * factor.to(p.dtype))
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights `perturb` moved, bit for bit; the gradients taken at w + e stay."""
        for p, saved in self._saved.items():
            p.copy_(saved)
        self._saved.clear()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """The base optimizer's update with the current gradients (call after `restore`)."""
        if self._saved:
            raise RuntimeError("SAM.step() while the weights are perturbed: call restore() first")
        return self.base_optimizer.step(closure)

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self._share_base()


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics stay as they are (momentum 0) inside: SAM's second pass sees the same
    batches at perturbed weights, and they must not count twice (the reference's `disable_running_stats`)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
