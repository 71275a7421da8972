"""Multi-process training: sharded sampling, backend choice, and torchrun on the CPU (gloo) end to end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from deepfake.data.dataset import EpochSampler, ShardedSampler
from deepfake.errors import ConfigError, UserError
from deepfake.system.distributed import (
    DistContext,
    gather_predictions,
    resolve_backend,
    worker_hydra_overrides,
    wrap,
)
from deepfake.training.resume import Resume, check_train_set
from tests.conftest import CONF, ROOT, make_folder_dataset, run_cli, write_face


def shards(n: int, world: int, pad: bool, epoch: int = 0, seed: int = 7) -> list[list[int]]:
    out = []
    for rank in range(world):
        sampler = ShardedSampler(EpochSampler(n, seed=seed, shuffle=True), rank, world, pad=pad)
        sampler.set_epoch(epoch)
        assert len(sampler) == len(list(sampler))
        out.append([i for i, e in sampler if e == epoch])
    return out


def test_training_shards_are_equal_and_cover_the_epoch() -> None:
    parts = shards(10, 4, pad=True)
    assert [len(p) for p in parts] == [3, 3, 3, 3]  # every rank takes the same number of steps
    assert set().union(*parts) == set(range(10))
    order = EpochSampler(10, seed=7).order()
    assert [parts[r][k] for k in range(3) for r in range(4)] == (order + order)[:12]  # dealt round robin
    assert shards(10, 4, pad=True, epoch=1) != parts  # a new permutation each epoch (set_epoch)


def test_evaluation_shards_hold_each_sample_once() -> None:
    parts = shards(11, 3, pad=False)
    assert [len(p) for p in parts] == [4, 4, 3]
    assert sorted(i for p in parts for i in p) == list(range(11))


def test_shard_resumes_mid_epoch_at_the_same_sample() -> None:
    sampler = ShardedSampler(EpochSampler(20, seed=1), rank=1, world_size=2, pad=True)
    sampler.set_epoch(3)
    full = [i for i, _ in sampler]
    sampler.set_epoch(3, start=4)  # the runner passes batches done x batch size, counted per rank
    assert [i for i, _ in sampler] == full[4:] and len(sampler) == 6


def test_gather_predictions_restores_dataset_order_without_a_group() -> None:
    labels, probs, index = np.array([1, 0]), np.array([0.9, 0.2]), np.array([5, 2])
    assert gather_predictions(DistContext(), labels, probs, index)[2].tolist() == [5, 2]  # one process: as is


def test_backend_follows_the_device() -> None:
    assert resolve_backend("auto", "cpu") == "gloo"
    if not torch.cuda.is_available():
        assert resolve_backend("auto", "auto") == "gloo"
    with pytest.raises(ConfigError, match=r"distributed\.backend=nccl needs CUDA GPUs"):
        resolve_backend("nccl", "cpu")
    with pytest.raises(ConfigError, match="does not run on Apple MPS"):
        resolve_backend("auto", "mps")
    assert DistContext(rank=1, local_rank=1, world_size=2, backend="gloo").device("auto") == "auto"
    with pytest.raises(ConfigError, match="would put every process on the same GPU"):
        DistContext(rank=1, local_rank=1, world_size=2, backend="nccl").device("cuda:0")


def test_sync_batchnorm_on_cpu_processes_is_refused() -> None:
    ctx = DistContext(rank=0, local_rank=0, world_size=2, backend="gloo")
    with pytest.raises(ConfigError, match=r"distributed\.sync_batchnorm=true needs CUDA GPUs"):
        wrap(torch.nn.BatchNorm2d(3), ctx, torch.device("cpu"), sync_batchnorm=True)


def test_only_rank_zero_gets_a_hydra_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert worker_hydra_overrides() == []
    monkeypatch.setenv("RANK", "0")
    assert worker_hydra_overrides() == []
    monkeypatch.setenv("RANK", "3")
    assert worker_hydra_overrides() == [
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
    ]


def val_image_count(root: Path) -> int:
    return sum(1 for p in (root / "val").rglob("*") if p.suffix in (".png", ".jpg"))


@pytest.mark.slow
@pytest.mark.cli
def test_torchrun_two_cpu_processes_match_one_process(tmp_path: Path) -> None:
    """DDP (2 x batch 4, accumulation 2) = one process with batch 8: same weights, same metrics.

    A LayerNorm backbone (test_convnext) normalises each image alone, so the split of a batch over processes
    cannot change the result. The validation split has an odd size: the ranks predict shards of different lengths.
    """
    data = make_folder_dataset(tmp_path / "data", videos=4, frames=4)  # 32 training images
    write_face(data / "val" / "real" / "extra" / "0000.png", 0, np.random.default_rng(9))
    assert val_image_count(data) == 33
    common = [
        "model=tiny",
        "model.architecture=test_convnext",
        "data=folder",
        f"data.root={data}",
        "data.num_workers=0",
        "data.img_size=32",
        "training.num_epochs=1",
        "training.grad_accum_steps=2",
        "training.amp=off",
        "training.optimizer._target_=torch.optim.SGD",  # Adam would magnify rounding noise in tiny gradients
        "~training.optimizer.betas",
        "+training.optimizer.momentum=0.9",
        "training.learning_rate=0.05",
        "logging.tensorboard=false",
        "eval.bootstrap_samples=0",
    ]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(ROOT / "train.py"), *common, "training.batch_size=4",
         "training.eval_batch_size=4", f"base_path={tmp_path / 'ddp'}"],
        cwd=cwd, capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    # One run directory, written by rank 0 only; the other rank left nothing anywhere.
    runs = [p for p in (tmp_path / "ddp" / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra", "MODEL_CARD.md", "backups", "checkpoints", "eval", "hardware.json", "metrics.json",
        "model_summary.json", "plots", "report.html", "train.log", "val_predictions.csv",
    ]  # fmt: skip
    assert len(list((run / "backups").glob("*.tar.gz"))) == 1  # one end-of-run backup, not one per rank
    assert json.loads((run / "hardware.json").read_text())["world_size"] == 2
    log = (run / "train.log").read_text()
    assert "distributed: 2 processes, backend gloo" in log
    assert "batch 4 x 2 accumulation x 2 processes = effective batch 16; 2 optimizer steps per epoch" in log
    ddp_metrics = json.loads((run / "metrics.json").read_text())
    assert ddp_metrics["global_step"] == 2

    # The same training in one process: batch 8 (= 2 x 4) sees the same samples in the same windows.
    from train import train

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [*common, "training.batch_size=8", f"base_path={tmp_path / 'single'}"])
    train(cfg)
    (single_run,) = (tmp_path / "single" / "outputs").glob("*/*")
    single_metrics = json.loads((single_run / "metrics.json").read_text())
    ddp_state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    single_state = torch.load(single_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert ddp_state.keys() == single_state.keys()
    for key, value in single_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-4, atol=1e-5, msg=key)
    for key in ("val/auc", "val/loss", "val/acc", "val/eer", "val/video_auc", "train/epoch_loss"):
        assert ddp_metrics["final"][key] == pytest.approx(single_metrics["final"][key], abs=1e-5), key

    # The DDP checkpoint loads in single-process evaluate.py, which scores the val split exactly as training did.
    proc = run_cli(
        [str(ROOT / "evaluate.py"), f"checkpoint={run / 'checkpoints' / 'last.pt'}", f"data.test_sets=[{data / 'val'}]",
         "data.num_workers=0", "eval.bootstrap_samples=0"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(
        (run / "eval" / f"{data.name}_val" / "metrics.json").read_text()
    )  # a split: its dataset_split
    assert report["counts"]["images"] == 33
    final = ddp_metrics["final"]
    assert report["frame"]["auc"] == pytest.approx(final["val/auc"], abs=1e-6)
    assert report["frame"]["loss"] == pytest.approx(final["val/loss"], abs=1e-6)
    assert report["frame"]["acc"] == pytest.approx(final["val/acc"], abs=1e-6)
    assert report["video"]["auc"] == pytest.approx(final["val/video_auc"], abs=1e-6)


def _stop_at(rank: int, init_file: str, out: str) -> None:
    """One gloo rank; only rank 1 receives the signal (after step 3); both record where they stop."""
    import signal

    import torch.distributed as dist

    from deepfake.system.distributed import AgreedStop
    from deepfake.system.interrupt import GracefulInterrupt

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    local = GracefulInterrupt()
    stop = AgreedStop(
        local, DistContext(rank=rank, world_size=2, backend="gloo"), torch.device("cpu"), every=4
    )
    stopped_at = None
    for step in range(1, 13):
        if rank == 1 and step == 3:
            local.signum = signal.SIGTERM
        if stop(step):
            stopped_at = step
            break
    at_epoch_end = stop.agree()
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps([stopped_at, stop.signum, at_epoch_end]))


@pytest.mark.cli
def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_stop_at, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results == [[4, 15, True], [4, 15, True]]  # the first exchange after the signal, SIGTERM on both


def test_a_mid_epoch_checkpoint_resumes_only_on_as_many_processes(tmp_path: Path) -> None:
    ts = {"epoch": 2, "batch_in_epoch": 5, "num_train_samples": 40, "world_size": 2}
    resume = Resume(tmp_path / "last.pt", None, {"train_state": ts})
    check_train_set(resume, 40, world_size=2)
    with pytest.raises(UserError, match=r"on 1 process\(es\): it stopped mid-epoch \(epoch 3, batch 5\) on 2.*"
                                        r"torchrun --nproc_per_node=2"):  # fmt: skip
        check_train_set(resume, 40, world_size=1)
    check_train_set(Resume(tmp_path / "last.pt", None, {"train_state": {**ts, "batch_in_epoch": 0}}), 40, 1)


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank, from /proc (Linux)."""
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        with contextlib.suppress(OSError):
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return int(child)
    return None


@pytest.mark.cli
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
def test_sigterm_to_one_rank_saves_an_interrupt_checkpoint(tmp_path: Path) -> None:
    """A scheduler's SIGTERM that reaches rank 1 alone: both ranks stop after the same step and rank 0 saves
    its interrupt checkpoint and backup before anyone exits."""
    data = make_folder_dataset(tmp_path / "data", videos=8, frames=8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(ROOT / "train.py"), "model=tiny",
         "data=folder", f"data.root={data}", "data.num_workers=0", "data.img_size=32", "training.batch_size=4",
         "training.num_epochs=500", "training.log_every_n_steps=5", "logging.tensorboard=false",
         f"base_path={tmp_path / 'out'}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "out").glob("outputs/*/*/checkpoints/last.pt")):  # an epoch has run
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        rank1 = _rank_pid(proc.pid, 1)
        assert rank1 is not None
        os.kill(rank1, signal.SIGTERM)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode != 0  # torchrun reports the interrupted workers
    (run,) = (tmp_path / "out").glob("outputs/*/*")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert state["saved_at"] == "interrupt" and state["world_size"] == 2
    assert state["global_step"] < 500 * state["steps_per_epoch"]
    assert len(list((run / "backups").glob("*-interrupt.tar.gz"))) == 1
    assert json.loads((run / "metrics.json").read_text())["stop_reason"] == "interrupted by SIGTERM"
    assert f"Resume with: python {ROOT / 'train.py'} resume={run}" in out
