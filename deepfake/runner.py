"""`train(cfg)`: wires config, hardware, data, model, loop, metrics and checkpoints into one run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from deepfake.checkpoint import atomic_write, build_state, save_checkpoint, unwrap
from deepfake.config import Config, to_config
from deepfake.engine import LoopConfig, TrainState, train_epoch, validate
from deepfake.errors import UserError
from deepfake.hardware import HardwareManager
from deepfake.metrics import detection_metrics
from deepfake.monitor import EarlyStopping, improved
from deepfake.tensorboard import TensorBoardLogger

log = logging.getLogger("deepfake")


def instantiate(config: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a UserError raised by the target surfaces as itself, not wrapped."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """Hydra's output dir when Hydra runs this job; otherwise a fresh `<base_path>/outputs/<date>/<time>`."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir), True
    now = dt.datetime.now()
    run_dir = (
        Path(cfg.base_path).expanduser() / "outputs" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    )
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, False


def _attach_file_log(run_dir: Path) -> logging.Handler:
    """Without Hydra, mirror Hydra's job logging: console plus `<run dir>/train.log`."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and h.stream is sys.stdout for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(console)
    return handler


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def epoch_line(
    epoch: int, num_epochs: int, train: dict[str, float], val: dict[str, float], took: float, eta: float
) -> str:
    parts = [f"epoch {epoch + 1}/{num_epochs}", f"train loss {train['train/epoch_loss']:.4f}"]
    shown = ("auc", "acc", "eer", "ap", "loss", "video_auc")
    parts.append("val " + " ".join(f"{k} {val[f'val/{k}']:.4f}" for k in shown if f"val/{k}" in val))
    if "val_ema/auc" in val:
        parts.append(f"ema auc {val['val_ema/auc']:.4f}")
    parts.append(f"{train['train/epoch_img_per_s']:.0f} img/s")
    parts.append(f"{_fmt_duration(took)}")
    parts.append(f"ETA {_fmt_duration(eta)}")
    return " | ".join(parts)


def train(cfg: Config | DictConfig | dict) -> float:
    """Train one detector as configured and return the best value of `training.monitor`."""
    cfg = to_config(cfg)
    run_dir, under_hydra = resolve_run_dir(cfg)
    handler = None if under_hydra else _attach_file_log(run_dir)
    try:
        return _train(cfg, run_dir)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _train(cfg: DictConfig, run_dir: Path) -> float:
    t_start = time.perf_counter()
    tc = cfg.training
    log.info("run directory: %s", run_dir.resolve())
    seed_everything(cfg.seed)

    hw = HardwareManager(**cfg.hardware)
    hw.configure()
    precision = hw.precision(tc.amp)
    device = hw.device
    summary = hw.summary(str(run_dir))
    atomic_write(run_dir / "hardware.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    log.info("device: %s (%s), precision %s", device, hw.reason, precision.name)

    model = instantiate(cfg.model).to(device)
    img_size = cfg.data.img_size or model.img_size
    data = instantiate(
        cfg.data,
        img_size=img_size,
        batch_size=tc.batch_size,
        eval_batch_size=tc.eval_batch_size,
        seed=cfg.seed,
        pin_memory=device.type == "cuda",
        _convert_="all",
    )
    data.setup()
    train_loader = data.train_dataloader()
    val_loader = data.eval_dataloader("val")
    val_videos = np.asarray(val_loader.dataset.videos, dtype=object)
    num_batches = len(train_loader)
    steps_per_epoch = math.ceil(num_batches / tc.grad_accum_steps)
    log.info(
        "batch %d x %d accumulation = effective batch %d; %d optimizer steps per epoch",
        tc.batch_size, tc.grad_accum_steps, tc.batch_size * tc.grad_accum_steps, steps_per_epoch,
    )  # fmt: skip

    optimizer, scheduler = unwrap(model).configure_optimizers(
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        optimizer=instantiate(tc.optimizer, _convert_="all"),
        scheduler=instantiate(tc.scheduler, _convert_="all"),
        steps_per_epoch=steps_per_epoch,
        num_epochs=tc.num_epochs,
    )
    ema = None
    if tc.ema.enabled:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=tc.ema.decay, use_warmup=tc.ema.warmup)

    loop = LoopConfig(
        grad_clip_mode=tc.grad_clip.mode,
        grad_clip_max=tc.grad_clip.max,
        accum_steps=tc.grad_accum_steps,
        on_nan=tc.on_nan,
        log_every=tc.log_every_n_steps,
        pos_weight=data.pos_weight,
    )
    state = TrainState()
    early = EarlyStopping(**{k: v for k, v in tc.early_stopping.items() if k != "enabled"})
    best: dict[str, Any] = {"value": None, "epoch": None, "metrics": {}}
    tb = TensorBoardLogger(run_dir, enabled=cfg.logging.tensorboard)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    tb.text("config", f"```\n{config_yaml}\n```")
    stop_reason = "completed"
    final: dict[str, float] = {}
    epoch_times: list[float] = []

    def checkpoint_state(metrics: dict[str, float]) -> dict[str, Any]:
        return build_state(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=precision.scaler,
            ema=ema,
            train_state={
                "epoch": state.epoch,
                "global_step": state.global_step,
                "batch_in_epoch": state.batch_in_epoch,
                "skipped_steps": state.skipped_steps,
            },
            monitor={"best": best, "early_stopping": early.state_dict()},
            config_yaml=config_yaml,
            metrics=metrics,
        )

    try:
        for epoch in range(state.epoch, tc.num_epochs):
            t0 = time.perf_counter()
            state.epoch = epoch
            train_loader.sampler.set_epoch(epoch, start=state.batch_in_epoch * tc.batch_size)
            train_stats = train_epoch(
                model, train_loader, optimizer, scheduler, precision, state, loop, device,
                num_batches=num_batches, log=tb.scalars, ema=ema,
            )  # fmt: skip
            state.batch_in_epoch = 0
            val = _evaluate(model, val_loader, precision, device, val_videos, "val")
            if ema is not None:
                val.update(_evaluate(ema.module, val_loader, precision, device, val_videos, "val_ema"))
            monitored = val.get(tc.monitor)
            if monitored is None:
                raise KeyError(
                    f"training.monitor={tc.monitor} is not a validation metric; have {sorted(val)}"
                )
            if scheduler is not None:
                scheduler.step_epoch(monitored)
            is_best = improved(monitored, best["value"], tc.monitor_mode)
            if is_best:
                best = {"value": monitored, "epoch": epoch + 1, "metrics": dict(val)}
            val["val/auc_best"] = best["metrics"].get("val/auc", math.nan)
            tb.scalars(state.global_step, {**val, "train/epoch_loss": train_stats["train/epoch_loss"]})
            state.epoch = epoch + 1
            final = {**train_stats, **val, "epoch": epoch + 1}
            ckpt = checkpoint_state(val)
            save_checkpoint(run_dir / "checkpoints" / "last.pt", ckpt)
            if is_best:
                save_checkpoint(run_dir / "checkpoints" / "best.pt", ckpt)
            epoch_times.append(time.perf_counter() - t0)
            eta = float(np.mean(epoch_times)) * (tc.num_epochs - epoch - 1)
            log.info(epoch_line(epoch, tc.num_epochs, train_stats, val, epoch_times[-1], eta))
            if tc.early_stopping.enabled and early.step(val, epoch + 1):
                stop_reason = early.reason or "early stopping"
                log.info(stop_reason)
                break
    except BaseException as e:
        stop_reason = f"failed: {type(e).__name__}: {e}"
        raise
    finally:
        tb.close()
        _write_metrics(run_dir, cfg, final, best, stop_reason, state, time.perf_counter() - t_start)

    log.info(
        "best %s %.4f at epoch %s; checkpoints in %s",
        tc.monitor,
        best["value"],
        best["epoch"],
        run_dir / "checkpoints",
    )
    log.info("inspect with: tensorboard --logdir %s", run_dir)
    return float(best["value"]) if best["value"] is not None else math.nan


def _evaluate(
    model: torch.nn.Module,
    loader: Any,
    precision: Any,
    device: torch.device,
    videos: np.ndarray,
    prefix: str,
) -> dict[str, float]:
    labels, probs, index = validate(model, loader, precision, device)
    return detection_metrics(labels, probs, videos[index], prefix=prefix)


def _write_metrics(
    run_dir: Path,
    cfg: DictConfig,
    final: dict[str, float],
    best: dict[str, Any],
    stop_reason: str,
    state: TrainState,
    duration: float,
) -> None:
    payload = {
        "monitor": cfg.training.monitor,
        "mode": cfg.training.monitor_mode,
        "best": best,
        "final": final,
        "stop_reason": stop_reason,
        "epochs_completed": state.epoch,
        "global_step": state.global_step,
        "duration_s": round(duration, 2),
    }
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=True)
    atomic_write(run_dir / "metrics.json", lambda f: f.write(text.encode()))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")
