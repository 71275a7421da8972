"""Background resource sampler: CPU, RAM, process memory and disk through psutil, the GPU through NVML.

Readings are taken on a daemon thread every `interval_s` seconds and handed to a sink (TensorBoard tags
`hw/...`, the progress line). Nothing here touches a tensor, so sampling never synchronises the GPU, and an
NVML poll costs ~0.03 ms, so the sampler's cost is a few reads every couple of seconds.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

log = logging.getLogger("deepfake.monitoring")  # the name train.log has always shown

GB = 2**30
CHILD_REFRESH = 5  # readings between rescans for DataLoader worker processes
Reading = dict[str, float]


class GpuProbe:
    """Reads one GPU's utilisation, memory, temperature and power through NVML (nvidia-ml-py)."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle

    @classmethod
    def open(cls, device: torch.device) -> GpuProbe | None:
        """The probe for `device`, or None (quietly) when it is not a CUDA device or NVML is unavailable."""
        if device.type != "cuda":
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            return cls(pynvml, _nvml_handle(pynvml, device))
        except Exception as e:  # no driver, no library, a container without NVML: psutil readings still work
            log.debug("NVML unavailable (%s); sampling CPU, RAM and disk only", e)
            return None

    def read(self) -> Reading:
        """Each quantity on its own: a GPU that does not report power still reports the rest."""
        n, h = self.nvml, self.handle
        out: Reading = {}
        util = self._query(n.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            out["hw/gpu_util_percent"] = float(util.gpu)
        mem = self._query(n.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            out["hw/gpu_mem_used_gb"] = mem.used / GB
            out["hw/gpu_mem_percent"] = 100.0 * mem.used / max(mem.total, 1)
        temp = self._query(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
        if temp is not None:
            out["hw/gpu_temp_c"] = float(temp)
        power = self._query(n.nvmlDeviceGetPowerUsage, h)
        if power is not None:
            out["hw/gpu_power_w"] = power / 1000.0
        return out

    def _query(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError:  # NotSupported on some boards, e.g. power on consumer or MIG devices
            return None


def _nvml_handle(nvml: Any, device: torch.device) -> Any:
    """NVML numbers GPUs ignoring CUDA_VISIBLE_DEVICES, so match torch's device by UUID, then PCI bus."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = str(props.uuid)
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    except nvml.NVMLError:
        bus = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        return nvml.nvmlDeviceGetHandleByPciBusId(bus)


class ResourceSampler:
    """Calls `sink(reading)` every `interval_s` seconds from a daemon thread until `stop()`.

    `sink` runs on the sampler thread: it must be thread-safe (TensorBoard's writer queues events under a
    lock; the progress tracker only swaps a reference).
    """

    def __init__(
        self,
        sink: Callable[[Reading], None],
        interval_s: float = 2.0,
        disk_path: str | Path = ".",
        gpu: GpuProbe | None = None,
    ) -> None:
        self.sink = sink
        self.interval_s = interval_s
        self.disk_path = str(disk_path)
        self.gpu = gpu
        self.latest: Reading = {}
        self._process = psutil.Process()
        self._children: list[psutil.Process] = []
        self._reads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        psutil.cpu_percent(interval=None)  # starts the CPU-time window the first reading measures

    def read(self) -> Reading:
        vm = psutil.virtual_memory()
        out: Reading = {
            "hw/cpu_percent": psutil.cpu_percent(interval=None),
            "hw/ram_used_gb": (vm.total - vm.available) / GB,
            "hw/ram_percent": vm.percent,
            "hw/disk_free_gb": shutil.disk_usage(self.disk_path).free / GB,
        }
        kind, used = self._tree_memory()
        out[f"hw/proc_{kind}_gb"] = used / GB
        if self.gpu is not None:
            out.update(self.gpu.read())
        return out

    def _tree_memory(self) -> tuple[str, int]:
        """("pss" or "uss", bytes): the memory this process and its DataLoader workers hold, each page once.

        RSS counts torch's shared libraries and the workers' copy-on-write pages once per process (3.1 GB
        shown where 1.25 GB was in use). PSS splits each shared page among the processes that map it, so the
        sum over the tree is what the run costs; where the OS has no PSS (macOS, Windows), USS, the pages
        only one process maps, is the lower bound. Listing children scans every process on the machine
        (~2 ms), so the list is refreshed every `CHILD_REFRESH` readings; workers live for an epoch or the
        whole run, far longer than that.
        """
        if self._reads % CHILD_REFRESH == 0:
            self._children = self._process.children(recursive=True)
        self._reads += 1
        kind, total = unique_memory(self._process)
        for child in self._children:
            with contextlib.suppress(psutil.Error):  # a worker that exited since the list was taken
                total += unique_memory(child)[1]
        return kind, total

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> ResourceSampler:
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="deepfake-hw-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.latest = self.read()
                self.sink(self.latest)
            except Exception:  # a monitoring fault must not kill training; say so once and stop sampling
                log.warning("hardware sampler stopped after an error", exc_info=True)
                return

    def stop(self) -> None:
        """Stop and join, so the sink (e.g. the TensorBoard writer) can be closed safely afterwards."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
            self._thread = None

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unique_memory(process: psutil.Process) -> tuple[str, int]:
    """("pss", bytes) where the OS reports proportional set size (Linux), else ("uss", bytes)."""
    info = process.memory_full_info()
    pss = getattr(info, "pss", None)
    return ("pss", pss) if pss is not None else ("uss", info.uss)


def format_reading(reading: Reading) -> str:
    """One short line for the progress display: `cpu 45% | ram 5.1 GB (33%) | ... | gpu 97% 10.2 GB 63C`."""
    if not reading:
        return ""
    parts = [
        f"cpu {reading['hw/cpu_percent']:.0f}%",
        f"ram {reading['hw/ram_used_gb']:.1f} GB ({reading['hw/ram_percent']:.0f}%)",
        *(
            f"{kind} {reading[f'hw/proc_{kind}_gb']:.2f} GB"
            for kind in ("pss", "uss")
            if f"hw/proc_{kind}_gb" in reading
        ),
        f"disk {reading['hw/disk_free_gb']:.0f} GB free",
    ]
    gpu = []
    if "hw/gpu_util_percent" in reading:
        gpu.append(f"{reading['hw/gpu_util_percent']:.0f}%")
    if "hw/gpu_mem_used_gb" in reading:
        gpu.append(f"{reading['hw/gpu_mem_used_gb']:.1f} GB")
    if "hw/gpu_temp_c" in reading:
        gpu.append(f"{reading['hw/gpu_temp_c']:.0f}C")
    if "hw/gpu_power_w" in reading:
        gpu.append(f"{reading['hw/gpu_power_w']:.0f}W")
    if gpu:
        parts.append("gpu " + " ".join(gpu))
    return " | ".join(parts)
