"""HardwareManager: picks the device and precision, applies speed switches, describes the machine,
samples its resources in the background and frees GPU memory between phases."""

from __future__ import annotations

import gc
import logging
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

from deepfake.errors import ConfigError
from deepfake.system.precision import Precision
from deepfake.system.sampler import GB, GpuProbe, Reading, ResourceSampler
from deepfake.system.thread_probe import ThreadChooser, ThreadTuner, candidate_counts
from deepfake.system.threads import ThreadPlan, available_cores, probe_blocker, thread_plan, wait_policy_note

log = logging.getLogger("deepfake.hardware")  # the name train.log has always shown

LOW_RAM_GB = 4.0  # below this much available RAM, DataLoader workers and prefetching start to swap
LOW_DISK_GB = 5.0  # below this, a few checkpoints and backups of a large model no longer fit
# torch's own intra-op thread count, read before any run changes it: physical cores, or OMP_NUM_THREADS.
TORCH_THREADS = torch.get_num_threads()


class HardwareManager:
    """Chooses `device` (auto: CUDA, then MPS, then CPU) and says why."""

    def __init__(
        self,
        device: str = "auto",
        cudnn_benchmark: bool = True,
        tf32: bool = True,
        deterministic: bool = False,
        num_threads: int | None = None,
        adapt_threads: bool = False,
        adapt_margin: float = 0.25,
        sample_every_n_seconds: float = 2.0,
    ) -> None:
        self.device, self.reason = self._pick(device)
        self.cudnn_benchmark = cudnn_benchmark and not deterministic
        self.tf32 = tf32
        self.deterministic = deterministic
        self.num_threads = num_threads
        self.adapt_threads, self.adapt_margin = adapt_threads, adapt_margin
        self.sample_every_n_seconds = sample_every_n_seconds
        self.threads = ThreadTuner(None)  # configure() sets the run's

    @staticmethod
    def _pick(requested: str) -> tuple[torch.device, str]:
        mps = getattr(torch.backends, "mps", None)
        has_mps = bool(mps and mps.is_available())
        if requested == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda"), f"CUDA available ({torch.cuda.device_count()} device(s))"
            if has_mps:
                return torch.device("mps"), "no CUDA; Apple MPS available"
            return torch.device("cpu"), "no CUDA or MPS device found"
        if requested.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"hardware.device={requested} but CUDA is not available; use hardware.device=auto"
                )
            index = int(requested.split(":")[1]) if ":" in requested else 0
            if index >= torch.cuda.device_count():
                raise ConfigError(
                    f"hardware.device={requested} but only {torch.cuda.device_count()} CUDA device(s) exist"
                )
            return torch.device(requested), "requested"
        if requested == "mps" and not has_mps:
            raise ConfigError("hardware.device=mps but MPS is not available; use hardware.device=auto")
        if requested not in ("cpu", "mps"):
            raise ConfigError(f"hardware.device={requested!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return torch.device(requested), "requested"

    def configure(self, loader_workers: int = 0, unit: str = "step", per: str | None = None) -> ThreadPlan:
        """Apply the global speed/determinism switches for this process. The thread count starts where the
        loader workers leave cores (deepfake.system.threads); on the CPU the first `unit`s of work (steps,
        batches) then time the candidate counts, per `per` (an image) if the units differ in size
        (`self.threads`, deepfake.system.thread_probe), unless something fixes the count."""
        # torchrun's local ranks share this machine's cores, each with its own workers.
        cores = max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        plan = thread_plan(cores, loader_workers, self.device.type, self.num_threads, TORCH_THREADS)
        torch.set_num_threads(plan.threads)
        candidates = candidate_counts(cores, TORCH_THREADS, plan.threads)
        blocker = probe_blocker(
            self.device.type, self.num_threads, self.deterministic, len(candidates),
            int(os.environ.get("WORLD_SIZE", "1")),
        )  # fmt: skip
        chooser = None
        if blocker is None:
            chooser = ThreadChooser(
                candidates, plan.threads, adapt=self.adapt_threads, drift=self.adapt_margin
            )
            log.info("CPU threads: %d intra-op to start (%s), then timed against %s", plan.threads, plan.reason,
                     ", ".join(map(str, candidates)))  # fmt: skip
        else:
            why = plan.reason if self.num_threads else f"{plan.reason}; not timed: {blocker}"
            log.info("CPU threads: %d intra-op (%s)", plan.threads, why)
        self.threads = ThreadTuner(chooser, unit, per)
        note = wait_policy_note(plan)
        if note:
            log.warning(note)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=False)
            torch.backends.cudnn.deterministic = True
        return plan

    def precision(self, amp: str) -> Precision:
        """Resolve `training.amp`: auto = bf16 where the device supports it, else fp16 on CUDA, else fp32."""
        kind = self.device.type
        if amp == "off":
            return Precision(kind, None)
        bf16_ok = self._bf16_supported()
        if amp == "auto":
            if bf16_ok:
                amp = "bf16"
            elif kind == "cuda":
                amp = "fp16"
            else:
                return Precision(kind, None)
        if amp == "bf16":
            if not bf16_ok:
                raise ConfigError(
                    f"training.amp=bf16 is not supported on {self._name()}; use training.amp=fp16 or auto"
                )
            return Precision(kind, torch.bfloat16)
        if kind == "cpu":
            raise ConfigError("training.amp=fp16 needs a GPU; on the CPU use training.amp=bf16 or off")
        scaler = torch.amp.GradScaler(kind) if kind == "cuda" else None
        return Precision(kind, torch.float16, scaler)

    def _bf16_supported(self) -> bool:
        if self.device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        if self.device.type == "cpu":
            # Native bf16 kernels (AVX512-BF16/AMX) make CPU autocast worthwhile; emulated bf16 is slower.
            checker = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
            return bool(checker and checker())
        return self.device.type == "mps"

    def describe_device(self) -> str:
        """The device and what it is, e.g. `cuda:0 (NVIDIA H100 80GB HBM3)`, for run records and trackers."""
        name = self._name()
        return str(self.device) if name == self.device.type else f"{self.device} ({name})"

    def _name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return platform.processor() or self.device.type

    def summary(self, path: str = ".") -> dict[str, Any]:
        """What this run ran on; saved as hardware.json."""
        mem = psutil.virtual_memory()
        info: dict[str, Any] = {
            "device": str(self.device),
            "device_reason": self.reason,
            "device_name": self._name(),
            "torch": torch.__version__,
            "cuda_version": torch.version.cuda,
            "cpu_count": os.cpu_count(),
            "ram_gb": round(mem.total / 2**30, 2),
            "ram_available_gb": round(mem.available / 2**30, 2),
            "disk_free_gb": round(shutil.disk_usage(path).free / 2**30, 2),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            info.update(
                gpu_memory_gb=round(props.total_memory / 2**30, 2),
                gpu_capability=f"{props.major}.{props.minor}",
            )
            try:
                import pynvml

                pynvml.nvmlInit()
                info["driver"] = pynvml.nvmlSystemGetDriverVersion()
            except Exception:  # NVML is optional: the summary simply omits the driver
                pass
        return info

    def sampler(self, sink: Callable[[Reading], None], disk_path: str | Path = ".") -> ResourceSampler:
        """A background sampler (not yet started) of CPU, RAM, process RSS, disk and, via NVML, this GPU."""
        return ResourceSampler(sink, self.sample_every_n_seconds, disk_path, GpuProbe.open(self.device))

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gb(self) -> float | None:
        """CUDA allocator peak since the last reset (host-side bookkeeping: no device sync); None off CUDA."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / GB

    def free_memory(self) -> None:
        """Drop unreachable tensors and return cached blocks to the driver between phases (e.g. check -> train)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def describe(summary: dict[str, Any]) -> str:
    """One line for the log: what `hardware.json` holds, readable."""
    device = f"{summary['device']} ({summary['device_name']})"
    if "gpu_memory_gb" in summary:
        extras = [f"{summary['gpu_memory_gb']:.1f} GB"]
        if summary.get("driver"):
            extras.append(f"driver {summary['driver']}")
        if summary.get("cuda_version"):
            extras.append(f"CUDA {summary['cuda_version']}")
        device += " " + ", ".join(extras)
    return (
        f"hardware: {device} | {summary['cpu_count']} CPUs | RAM {summary['ram_gb']:.1f} GB "
        f"({summary['ram_available_gb']:.1f} GB available) | disk {summary['disk_free_gb']:.1f} GB free"
    )


def hardware_warnings(summary: dict[str, Any], min_free_gb: float = LOW_DISK_GB) -> list[str]:
    """What about this machine will slow or endanger a run: no GPU, low RAM, low disk."""
    out = []
    if summary["device"] == "cpu":
        out.append(
            "no GPU: training runs on the CPU, fine for the tiny model and small tests but far too slow for "
            "real backbones; on Colab pick a GPU runtime, on a cluster request one"
        )
    if summary["ram_available_gb"] < LOW_RAM_GB:
        out.append(
            f"low RAM: {summary['ram_available_gb']:.1f} GB available; lower data.num_workers or "
            "data.prefetch_factor if the machine starts swapping"
        )
    need = max(min_free_gb, LOW_DISK_GB)
    if summary["disk_free_gb"] < need:
        out.append(
            f"low disk: {summary['disk_free_gb']:.1f} GB free where the run writes (want >= {need:.0f} GB "
            "for checkpoints and backups); free space or set base_path elsewhere"
        )
    return out
