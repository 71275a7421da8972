"""End-to-end training throughput from JPEG files against the model's own ceiling.

Three figures in one run, for one model and image size:
  1. the ceiling: a bare training step on synthetic tensors already on the device (no data loading);
  2. end-to-end: `train()` reading JPEG files from disk through the configured DataLoader;
  3. a plain fp32 NCHW loop on the same tensors (the way DeepfakeBench trains), for the speed-up of (1).

    python benchmarks/throughput.py                               # CPU-sized defaults, under 2 minutes
    python benchmarks/throughput.py --model efficientnet_b0 --img-size 224 --batch 128 --videos 400   # GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from bare_step import bare_step
from hydra import compose, initialize_config_dir

from deepfake.config import register_configs
from deepfake.model.detector import get_model
from deepfake.system.hardware import HardwareManager
from deepfake.system.precision import Precision
from deepfake.training.runner import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def bare_step_rate(model_name: str, img_size: int, batch: int, precision: Precision, device, channels_last: bool,
                   steps: int) -> float:  # fmt: skip
    """Images/s of forward + backward + AdamW on device-resident tensors: what no loader can beat."""
    model = get_model(model_name, img_size=img_size, channels_last=channels_last).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 2, (batch,), device=device).float()

    def step() -> None:
        bare_step(model, opt, x, y, precision)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def end_to_end_rate(args: argparse.Namespace, base: Path) -> float:
    """Images/s of the last training epoch of a real run on generated JPEG face crops."""
    register_configs()
    overrides = [
        f"base_path={base}",
        f"model.architecture={args.model}",
        f"model.img_size={args.img_size}",
        f"data.img_size={args.img_size}",
        f"data.synthetic.img_size={max(args.img_size, 64)}",
        f"data.synthetic.videos_per_split={{train: {args.videos}, val: 8, test: 2}}",
        f"training.batch_size={args.batch}",
        f"training.num_epochs={args.epochs}",
        f"training.amp={args.amp}",
        "logging.tensorboard=true",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train(cfg)
    (run,) = [p for p in (base / "outputs").glob("*/*") if p.is_dir()]
    return json.loads((run / "metrics.json").read_text())["final"]["train/epoch_img_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--videos", type=int, default=100, help="training videos (8 frames each) to generate")
    p.add_argument("--epochs", type=int, default=2, help="the last epoch is measured (the first warms up)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of the bare loops")
    p.add_argument("--amp", default="auto")
    args = p.parse_args()

    hw = HardwareManager()
    hw.configure()
    device, precision = hw.device, hw.precision(args.amp)
    cl = device.type == "cuda"
    ceiling = bare_step_rate(args.model, args.img_size, args.batch, precision, device, cl, args.steps)
    fp32 = bare_step_rate(
        args.model, args.img_size, args.batch, Precision(device.type, None), device, False, args.steps
    )
    with tempfile.TemporaryDirectory() as tmp:
        e2e = end_to_end_rate(args, Path(tmp))
    print(
        f"device {device}, model {args.model} @ {args.img_size}px, batch {args.batch}, precision {precision.name}"
    )
    print(
        f"ceiling (bare step, tensors on device, {precision.name}{' NHWC' if cl else ''}): {ceiling:.0f} img/s"
    )
    print(f"plain fp32 NCHW loop: {fp32:.0f} img/s")
    print(f"end-to-end train() from JPEG files: {e2e:.0f} img/s")
    print(f"end-to-end / ceiling = {e2e / ceiling:.3f}; ceiling / fp32 NCHW = {ceiling / fp32:.2f}x")


if __name__ == "__main__":
    main()
