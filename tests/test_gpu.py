"""GPU paths: bf16/fp16 autocast, the fp16 GradScaler skipping inf steps, channels_last, torch.compile.

Skipped without CUDA; run on a GPU machine with `python -m pytest -q tests/test_gpu.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepfake.model.detector import get_model
from deepfake.system.precision import Precision
from deepfake.training.engine import EpochHooks, LoopConfig, StepContext, TrainState, train_epoch
from tests.conftest import FAST

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def gpu_batches(
    n: int, size: int = 8, img: int = 32
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (size, 3, img, img), generator=g, dtype=torch.uint8),
            torch.randint(0, 2, (size,), generator=g),
            torch.arange(size),
        )
        for _ in range(n)
    ]


def fit(model: torch.nn.Module, precision: Precision, n: int = 4, **kw) -> tuple[TrainState, list[dict]]:
    logged: list[dict] = []
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = TrainState()
    ctx = StepContext(model, opt, precision, CUDA, **kw)
    train_epoch(
        ctx, gpu_batches(n), state, LoopConfig(log_every=1), n, EpochHooks(log=lambda s, v: logged.append(v))
    )
    return state, logged


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_trains(dtype: torch.dtype) -> None:
    model = get_model("tiny").to(CUDA)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    state, logged = fit(model, Precision("cuda", dtype, scaler))
    assert state.global_step == 4
    assert all(torch.isfinite(torch.tensor(v["train/loss"])) for v in logged)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    with torch.autocast("cuda", dtype=dtype):
        assert model.backbone(model.normalize(gpu_batches(1)[0][0].to(CUDA))).dtype == dtype


def test_fp16_scaler_skips_an_inf_gradient_step_and_counts_it() -> None:
    model = get_model("tiny").to(CUDA)
    weight = model.head[1].weight
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 2 else grad

    weight.register_hook(poison)
    state, logged = fit(model, Precision("cuda", torch.float16, torch.amp.GradScaler("cuda")))
    assert state.skipped_steps == 1
    assert [v["train/skipped_steps"] for v in logged] == [0.0, 1.0, 1.0, 1.0]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_model_and_input() -> None:
    model = get_model("tiny", channels_last=True).to(CUDA)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = model.normalize(gpu_batches(1)[0][0].to(CUDA))
    assert x.is_contiguous(memory_format=torch.channels_last)
    state, _ = fit(model, Precision("cuda", torch.bfloat16))
    assert state.global_step == 4


def test_compile_trains_and_keeps_plain_state_dict_keys() -> None:
    model = get_model("tiny", compile=True).to(CUDA)
    state, logged = fit(model, Precision("cuda", torch.bfloat16))
    assert state.global_step == 4 and len(logged) == 4
    assert not any("_orig_mod" in k for k in model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_end_to_end_on_the_gpu(compose_cfg, folder_dataset: Path, tmp_path: Path, amp: str) -> None:
    from train import train

    cfg = compose_cfg(
        [*FAST, "data=folder", f"data.root={folder_dataset}", f"base_path={tmp_path}", f"training.amp={amp}"]
    )
    train(cfg)
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    hardware = json.loads((run / "hardware.json").read_text())
    assert hardware["device"] == "cuda" and hardware["gpu_memory_gb"] > 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (ckpt["scaler"] is not None) == (amp == "fp16")
