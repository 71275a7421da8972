"""How many intra-op threads a process starts with, chosen from the cores it may run on and the loader workers
that share them; on the CPU the count is then chosen by timing (deepfake.system.thread_probe).

torch's default is one intra-op thread per core. With loader workers beside it, a 2-core machine then runs
four busy threads on two cores; an OpenMP team only moves as fast as its slowest thread, so any other load
on the machine stalls every step (issue 19: 0.2 of the quiet throughput beside two busy loops, 0.6 with one
thread, and no loss when quiet). The workers get the cores they need; the intra-op pool gets the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # torch.set_num_threads
    passive: bool  # whether waiting OpenMP threads should sleep (OMP_WAIT_POLICY=PASSIVE) instead of spinning
    reason: str


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: a container's or a SLURM job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def thread_plan(
    cores: int, workers: int, device: str, override: int | None, ceiling: int | None = None
) -> ThreadPlan:
    """Intra-op threads = the cores left after the loader workers (at least 1, at most `ceiling`: torch's own
    choice, which counts physical cores and honours OMP_NUM_THREADS); `override` wins.

    On an accelerator the main process mostly queues kernels, so the same rule leaves the workers, which
    decode on the CPU, their cores. Waiting threads should sleep whenever threads and workers together
    outnumber the cores: a spinning thread then burns a core that a worker needs.
    """
    cores, workers = max(1, cores), max(0, workers)
    if override:
        threads, why = override, f"hardware.num_threads={override}"
    else:
        threads = max(1, cores - workers)
        why = f"{cores} core(s) - {workers} loader worker(s)" + (" (at least 1)" if cores <= workers else "")
        if ceiling is not None and threads > ceiling:
            threads, why = max(1, ceiling), why + f", capped at torch's default of {ceiling}"
        if device != "cpu":
            why += f"; the {device} device does the model's compute"
    passive = threads > 1 and threads + workers > cores
    return ThreadPlan(threads, passive, why)


def probe_blocker(
    device: str, override: int | None, deterministic: bool, candidates: int, world_size: int
) -> str | None:
    """Why the count is not chosen by timing (deepfake.system.thread_probe), or None when it is.

    Off an accelerator only: there the device computes and the CPU threads mostly wait. Not under
    `hardware.deterministic` (a rerun must use the same count), nor under torchrun (each rank would time its
    own count, and a checkpoint keeps rank 0's)."""
    if override:
        return f"hardware.num_threads={override}"
    if device != "cpu":
        return f"the {device} device does the model's compute"
    if deterministic:
        return "hardware.deterministic=true keeps one count"
    if world_size > 1:
        return f"{world_size} torchrun processes keep one count each"
    if candidates < 2:
        return "one core"
    return None


def wait_policy_note(plan: ThreadPlan, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """What to tell the user about OpenMP's wait policy, or None when nothing needs saying.

    OpenMP reads OMP_WAIT_POLICY once, when torch loads it, so this process cannot change its own policy: it
    can only say how to start with the right one.
    """
    current = environ.get(WAIT_POLICY_ENV, "").upper()
    if plan.passive and current != "PASSIVE":
        return (
            f"{plan.threads} intra-op threads and their loader workers outnumber the cores: start with "
            f"{WAIT_POLICY_ENV}=PASSIVE so idle threads sleep instead of spinning, or lower hardware.num_threads"
        )
    return None
