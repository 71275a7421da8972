"""The loaders' worker processes: how many to start, and how each one starts (seeded, deaf to Ctrl-C)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from deepfake.system.interrupt import ignore_in_worker


def default_num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def resolve_num_workers(num_workers: int) -> int:
    """`data.num_workers` as the loaders will use it: -1 means one per core (up to 8)."""
    return default_num_workers() if num_workers < 0 else num_workers


def init_worker(worker_id: int) -> None:
    """Seed Python and numpy from torch's per-worker seed (derived from the data seed); ignore Ctrl-C/SIGTERM."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    ignore_in_worker(worker_id)
