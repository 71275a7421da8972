"""HardwareManager: device choice and reasons, warnings, the background sampler and its NVML reader."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.system.hardware import HardwareManager, describe, hardware_warnings
from deepfake.system.sampler import GB, GpuProbe, format_reading


def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_picks_the_cpu_here_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():  # this machine as it is
        hw = HardwareManager("auto")
        assert hw.device == torch.device("cpu") and hw.reason == "no CUDA or MPS device found"
    no_accelerators(monkeypatch)
    hw = HardwareManager("auto")
    assert hw.device == torch.device("cpu") and hw.reason == "no CUDA or MPS device found"
    assert hw.peak_memory_gb() is None
    assert hw.precision("off").name == "fp32"


def test_auto_prefers_cuda_then_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    hw = HardwareManager("auto")
    assert hw.device == torch.device("cuda") and hw.reason == "CUDA available (2 device(s))"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    hw = HardwareManager("auto")
    assert hw.device == torch.device("mps") and "MPS" in hw.reason


def test_summary_line_and_warnings_name_the_fix(tmp_path: Path) -> None:
    summary = HardwareManager("cpu").summary(str(tmp_path))
    line = describe(summary)
    assert line.startswith("hardware: cpu (") and f"{summary['cpu_count']} CPUs" in line and "GB free" in line
    tight = {**summary, "ram_available_gb": 1.5, "disk_free_gb": 0.5}
    warnings = hardware_warnings(tight, min_free_gb=1.0)
    assert [w.split(":")[0] for w in warnings] == ["no GPU", "low RAM", "low disk"]
    assert "data.num_workers" in warnings[1] and "base_path" in warnings[2]
    gpu = {**summary, "device": "cuda", "ram_available_gb": 64.0, "disk_free_gb": 500.0}
    assert hardware_warnings(gpu) == []


def test_sampler_writes_hw_tags_that_tensorboard_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tb = TensorBoardLogger(tmp_path)
    readings: list[dict[str, float]] = []
    two = threading.Event()

    def sink(reading: dict[str, float]) -> None:
        tb.scalars(len(readings), reading)
        readings.append(reading)
        if len(readings) >= 2:
            two.set()

    hw = HardwareManager("cpu", sample_every_n_seconds=0.02)
    with caplog.at_level(logging.DEBUG, logger="deepfake"):
        sampler = hw.sampler(sink, disk_path=tmp_path).start()
        assert two.wait(timeout=10)
        sampler.stop()
    tb.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the NVML fallback is quiet
    count = len(readings)
    assert sampler.latest is readings[-1]

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"hw/cpu_percent", "hw/ram_used_gb", "hw/ram_percent", "hw/proc_pss_gb", "hw/disk_free_gb"} <= tags
    assert not any(t.startswith("hw/gpu") for t in tags) or torch.cuda.is_available()
    assert len(events.Scalars("hw/ram_percent")) == count
    last = events.Scalars("hw/ram_used_gb")[-1].value
    assert 0 < last < 4096 and 0 < events.Scalars("hw/ram_percent")[-1].value <= 100
    assert 0 <= events.Scalars("hw/cpu_percent")[-1].value <= 100
    assert events.Scalars("hw/proc_pss_gb")[-1].value > 0.05  # this test process holds torch


def test_sampler_off_when_interval_is_zero(tmp_path: Path) -> None:
    sampler = HardwareManager("cpu", sample_every_n_seconds=0).sampler(lambda r: None, tmp_path).start()
    assert not sampler.running
    sampler.stop()


class FakeNvml:
    """The slice of pynvml that GpuProbe uses; power reports NotSupported like on some boards."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetUtilizationRates(self, h: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h: object) -> SimpleNamespace:
        return SimpleNamespace(used=10 * GB, total=80 * GB, free=70 * GB)

    def nvmlDeviceGetTemperature(self, h: object, sensor: int) -> int:
        return 63

    def nvmlDeviceGetPowerUsage(self, h: object) -> int:
        raise self.NVMLError("Not Supported")


def test_gpu_probe_reads_each_nvml_quantity_on_its_own() -> None:
    reading = GpuProbe(FakeNvml(), handle=object()).read()
    assert reading == {
        "hw/gpu_util_percent": 97.0,
        "hw/gpu_mem_used_gb": 10.0,
        "hw/gpu_mem_percent": 12.5,
        "hw/gpu_temp_c": 63.0,
    }
    base = {"hw/cpu_percent": 50.0, "hw/ram_used_gb": 8.0, "hw/ram_percent": 25.0}
    line = format_reading({**base, "hw/proc_pss_gb": 2.0, "hw/disk_free_gb": 100.0, **reading})
    assert line == "cpu 50% | ram 8.0 GB (25%) | pss 2.00 GB | disk 100 GB free | gpu 97% 10.0 GB 63C"


def test_gpu_probe_is_none_off_cuda_or_without_nvml(caplog: pytest.LogCaptureFixture) -> None:
    assert GpuProbe.open(torch.device("cpu")) is None
    if not torch.cuda.is_available():  # here NVML has no driver to talk to: quietly no probe
        with caplog.at_level(logging.INFO):
            assert GpuProbe.open(torch.device("cuda")) is None
        assert not caplog.records


def test_memory_reading_counts_shared_pages_once(tmp_path: Path) -> None:
    """A forked worker shares the parent's pages: RSS counts them twice, the reported PSS once."""
    import multiprocessing

    import numpy as np
    import psutil

    held = np.ones(100 * 2**20, dtype=np.uint8)  # 100 MB, touched, then shared copy-on-write with the child
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    child = ctx.Process(target=stop.wait, args=(60,))
    child.start()
    try:
        sampler = HardwareManager("cpu").sampler(lambda r: None, tmp_path)
        reading = sampler.read()
        procs = [psutil.Process(), psutil.Process(child.pid)]
        rss = sum(p.memory_info().rss for p in procs) / GB
    finally:
        stop.set()
        child.join()
    assert "hw/proc_rss_gb" not in reading
    assert format_reading(reading).split(" | ")[2].startswith("pss ")
    pss = reading["hw/proc_pss_gb"]
    assert 0.1 < pss < rss - 0.08  # the 100 MB (and torch's libraries) not counted per process
    assert held[-1] == 1
