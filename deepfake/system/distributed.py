"""Multi-process training (torchrun, or one SLURM job with several tasks): the process group, which process
writes, and gathering validation predictions so metrics see the whole split.

`torchrun --nproc_per_node=N train.py ...` starts N copies of the same command. Each joins the group here
(gloo on the CPU, nccl on GPUs), trains on its shard of every epoch through DistributedDataParallel, predicts
its shard of the validation split, and receives everyone's predictions, so each process computes the metrics
a single process would and takes the same decisions (best checkpoint, early stopping, plateau schedule).
Only rank 0 writes: run directory, logs, TensorBoard, checkpoints, metrics and backups.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepfake.choices import BACKENDS
from deepfake.errors import ConfigError

if TYPE_CHECKING:
    from deepfake.system.interrupt import GracefulInterrupt

log = logging.getLogger("deepfake.distributed")  # the name train.log has always shown


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; the defaults describe a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    owns_group: bool = False  # this process initialised the group, so it also tears it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """Each process takes the GPU of its local rank: `auto`/`cuda` become `cuda:<local rank>`."""
        if not self.enabled or self.backend != "nccl":
            return requested
        if requested not in ("auto", "cuda"):
            raise ConfigError(
                f"hardware.device={requested} would put every process on the same GPU; with several processes "
                "use hardware.device=auto (each takes the GPU of its local rank)"
            )
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (any picklable value)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. generating a cached dataset); the others then reuse its result."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def min(self, value: int) -> int:
        """The smallest `value` over all ranks (a batch size every GPU can hold)."""
        if not self.enabled:
            return value
        return min(self.all_gather(value))

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _launch_env() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) from torchrun's variables, or from a multi-task submitit/SLURM job."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"])
    if "SUBMITIT_EXECUTOR" in os.environ:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            # Sets MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the job's task layout (tasks_per_node).
            env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            return env.rank, env.local_rank, env.world_size
    return None


def resolve_backend(backend: str, device: str) -> str:
    """`auto`: nccl when this process trains on a GPU, gloo on the CPU."""
    if backend not in BACKENDS:
        raise ConfigError(f"distributed.backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if device == "mps":
        raise ConfigError(
            "multi-process training does not run on Apple MPS; use hardware.device=cpu or one process"
        )
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if backend == "auto":
        return "nccl" if on_gpu else "gloo"
    if backend == "nccl" and not on_gpu:
        raise ConfigError(
            f"distributed.backend=nccl needs CUDA GPUs but hardware.device={device}; "
            "use distributed.backend=gloo (or auto) for CPU processes"
        )
    return backend


def setup(device: str = "auto", backend: str = "auto", timeout_min: float = 30.0) -> DistContext:
    """Join the process group that torchrun (or a multi-task SLURM job) started; one process gets a no-op."""
    if dist.is_available() and dist.is_initialized():  # the caller set the group up itself
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, local, world, dist.get_backend(), owns_group=False)
    env = _launch_env()
    if env is None or env[2] <= 1:
        return DistContext()
    rank, local_rank, world_size = env
    backend = resolve_backend(backend, device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=timeout_min))
    ctx = DistContext(rank, local_rank, world_size, backend, owns_group=True)
    if ctx.is_main:
        log.info("distributed: %d processes, backend %s", world_size, backend)
    return ctx


def worker_hydra_overrides() -> list[str]:
    """Hydra overrides for torchrun ranks > 0: no run directory, `.hydra` folder or log file of their own.

    Every rank runs `train.py` under Hydra; rank 0's run directory is the run's, and the runner broadcasts
    it to the others, so one run directory results however many processes train.
    """
    if int(os.environ.get("RANK", "0")) == 0:
        return []
    return ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def wrap(model: nn.Module, ctx: DistContext, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` (already on `device`); optionally SyncBatchNorm first.

    Call before building the optimizer: SyncBatchNorm conversion replaces the BatchNorm modules.
    """
    if not ctx.enabled:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError(
                "distributed.sync_batchnorm=true needs CUDA GPUs (PyTorch's SyncBatchNorm runs on GPUs only); "
                "set distributed.sync_batchnorm=false for CPU processes"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def local_module(model: nn.Module) -> nn.Module:
    """The module inside DDP: evaluation runs it directly, so uneven shards trigger no collective."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def gather_predictions(
    ctx: DistContext, labels: np.ndarray, probs: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rank's (labels, probs, dataset indices), concatenated and in dataset order on all ranks.

    Shards may differ in length; sorting by dataset index gives the exact arrays one process would have.
    """
    if not ctx.enabled:
        return labels, probs, index
    parts = ctx.all_gather((labels, probs, index))
    labels, probs, index = (np.concatenate([p[i] for p in parts]) for i in range(3))
    order = np.argsort(index, kind="stable")
    return labels[order], probs[order], index[order]


def reduce_train_stats(ctx: DistContext, stats: dict[str, float]) -> dict[str, float]:
    """An epoch's training summary over all ranks: mean loss and time, summed throughput."""
    if not ctx.enabled:
        return stats
    parts = ctx.all_gather(stats)
    out = {k: float(np.mean([p[k] for p in parts])) for k in stats}
    if "train/epoch_img_per_s" in stats:
        out["train/epoch_img_per_s"] = float(sum(p["train/epoch_img_per_s"] for p in parts))
    return out


@contextlib.contextmanager
def quiet_unless_main(ctx: DistContext) -> Iterator[None]:
    """Ranks > 0 log warnings and errors only, so the console shows each message once."""
    logger = logging.getLogger("deepfake")
    level = logger.level
    if not ctx.is_main:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class AgreedStop:
    """The graceful-stop request, agreed by every rank so that all stop after the same optimizer step.

    A signal reaches the ranks at different moments (torchrun forwards it process by process); a rank that
    stopped alone would leave the others waiting in the next gradient all-reduce until the job is killed,
    unsaved. Ranks exchange their local request (its signal number) with one small all-reduce, a host-device
    sync, so only every `every` optimizer steps (the loop's log steps, which sync anyway) and at epoch ends.
    A single process just reads its own flag.
    """

    def __init__(self, local: GracefulInterrupt, ctx: DistContext, device: torch.device, every: int) -> None:
        self.local = local
        self.ctx = ctx
        self.device = device
        self.every = max(1, every)
        self.signum: int | None = None  # the agreed request: set on every rank at once

    def __call__(self, global_step: int) -> bool:
        """After an optimizer step: whether to stop now (the training loop's `should_stop`)."""
        if self.signum is None and (not self.ctx.enabled or global_step % self.every == 0):
            self.agree()
        return self.signum is not None

    def agree(self) -> bool:
        """Exchange the local requests now (collective: every rank must call it at the same point)."""
        local = self.local.signum or 0
        if self.ctx.enabled:
            flag = torch.tensor([local], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = int(flag.item())
        if local:
            self.signum = local
        return self.signum is not None
