"""One GPU per parallel sweep job under `hydra/launcher=joblib`, through CUDA_VISIBLE_DEVICES.

The joblib launcher runs jobs in a pool of worker processes. Each worker claims the lowest free slot (a lock
file it holds for its whole life, released by the OS when it exits) and keeps slot k's GPU for every job it
runs: a CUDA context, once created, keeps the devices it saw, so the GPU must belong to the worker, not to a
job number (job 2 may land on the worker of job 0 while job 1 still runs).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("deepfake")

_claimed: tuple[FileLock, int] | None = None  # this process's slot lock and number, held until it exits


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU NVML reports."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and not d.strip().startswith("-")]
    try:
        import pynvml

        pynvml.nvmlInit()
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVIDIA driver: a CPU machine has no GPU to split
        return []


def lock_dir(sweep_dir: str | Path) -> Path:
    """A folder outside the sweep directory, private to this sweep, for the slot locks."""
    digest = hashlib.sha256(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"deepfake-gpu-slots-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_slot(folder: Path) -> int:
    """The lowest slot number no live process holds; this process keeps it until it exits."""
    global _claimed
    if _claimed is not None:
        return _claimed[1]
    for k in itertools.count():
        lock = FileLock(folder / f"slot-{k}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        _claimed = (lock, k)
        return k
    raise AssertionError("unreachable")


def assign_gpu(sweep_dir: str | Path, parallel_jobs: int) -> str | None:
    """Pin this worker to one GPU (its slot's, round robin); returns the GPU id, or None with under 2 GPUs.

    Must run before anything initialises CUDA in this process.
    """
    if _claimed is not None:  # a later job on the same worker keeps the worker's GPU
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible_gpus()
    if len(gpus) < 2:
        return None
    slot = claim_slot(lock_dir(sweep_dir))
    gpu = gpus[slot % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if slot >= len(gpus):
        log.warning(
            "%d parallel jobs on %d GPUs: this job shares GPU %s; set hydra.launcher.n_jobs=%d for one each",
            parallel_jobs, len(gpus), gpu, len(gpus),
        )  # fmt: skip
    log.info("parallel sweep worker %d: CUDA_VISIBLE_DEVICES=%s", slot, gpu)
    return gpu
