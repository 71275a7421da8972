"""Sweeps: the summary (files, failures, rebuilds), Optuna search, joblib and submitit launchers, GPU slots."""

from __future__ import annotations

import csv
import json
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deepfake.config import register_configs
from deepfake.sweeps import gpu_slots, summarize
from deepfake.sweeps.callbacks import cpu_oversubscription
from deepfake.sweeps.sweep_job import overridden, record_failure
from tests.conftest import CONF, FAST, ROOT, run_cli

ONE_EPOCH = [o.replace("training.num_epochs=2", "training.num_epochs=1") for o in FAST]
QUIET = ["logging.tensorboard=false", "eval.bootstrap_samples=0"]
SPACE = ("training.learning_rate", "training.weight_decay", "model.dropout_rate", "training.batch_size")


def sweep_args(tmp_path: Path, data: Path, *extra: str, searched: tuple[str, ...] = ()) -> list[str]:
    """A 1-epoch tiny sweep; keys in `searched` are left to the sweeper (a command-line value would fix them)."""
    fixed = [o for o in [*ONE_EPOCH, *QUIET] if o.partition("=")[0] not in searched]
    return [
        str(ROOT / "train.py"),
        "-m",
        f"base_path={tmp_path}",
        "data=folder",
        f"data.root={data}",
        *fixed,
        *extra,
    ]


def the_sweep(tmp_path: Path) -> Path:
    sweeps = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fake_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def metrics_of(best: float, epoch: int, reason: str = "completed", auc: float = 0.5) -> dict:
    return {
        "monitor": "val/auc",
        "mode": "max",
        "best": {"value": best, "epoch": epoch, "metrics": {}},
        "final": {"val/auc": auc, "val/loss": 0.6, "train/epoch_loss": 0.7, "epoch": 3},
        "stop_reason": reason,
        "epochs_completed": 3,
        "duration_s": 75.0,
    }


def test_summary_of_a_partial_sweep_marks_every_status(tmp_path: Path) -> None:
    """Finished, early-stopped, failed and still-running jobs each get a row; the best job is picked by mode."""
    sweep = tmp_path / "sweep"
    fake_job(sweep, "0", ["lr=0.1", "seed=1"], metrics_of(0.71, 2))
    fake_job(
        sweep, "1", ["lr=0.01", "seed=1"], metrics_of(0.93, 3, "early stopping: val/auc did not improve")
    )
    fake_job(sweep, "2", ["lr=1", "seed=1"], metrics_of(float("nan"), None, "failed: DataError: no images"))
    fake_job(sweep, "10", ["lr=0.001", "seed=1"], None)  # still running (or killed): no metrics.json yet
    (sweep / "not_a_job").mkdir()

    summary = summarize.summarize(sweep)

    assert [r.job for r in summary.rows] == ["0", "1", "2", "10"]  # numeric order, stray folders ignored
    assert [r.status for r in summary.rows] == ["completed", "stopped early", "failed", "unfinished"]
    assert summary.varying == ["lr"]
    assert summary.best is not None and summary.best.job == "1"
    rows = read_csv(sweep / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]
    assert rows[0]["best"] == "0.71" and rows[0]["best_epoch"] == "2" and rows[0]["duration_s"] == "75.0"
    assert rows[0]["final val/auc"] == "0.5" and rows[0]["overrides"] == "lr=0.1 seed=1"
    assert rows[2]["status"] == "failed" and rows[2]["error"] == "DataError: no images"
    assert rows[3]["status"] == "unfinished" and rows[3]["best"] == ""
    md = (sweep / "summary.md").read_text()
    assert "Common overrides: `seed=1`" in md
    assert "| 1 *" in md and "lr=0.01" in md and "1m15s" in md
    assert "Best: job 1 with val/auc 0.9300 at epoch 3" in md
    assert "Job 2 failed: DataError: no images" in md
    assert (sweep / "summary.png").stat().st_size > 1000


def test_summary_picks_the_lowest_value_for_a_min_monitor(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name, value in (("0", 0.40), ("1", 0.25), ("2", 0.31)):
        m = metrics_of(value, 1)
        m.update(monitor="val/loss", mode="min")
        fake_job(sweep, name, [f"lr={name}"], m)
    assert summarize.collect(sweep).best.job == "1"


def test_summarize_cli_rebuilds_and_reports_bad_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    fake_job(sweep, "0", ["lr=0.1"], metrics_of(0.8, 1))
    fake_job(sweep, "1", ["lr=0.2"], metrics_of(float("nan"), None, "failed: RuntimeError: boom"))
    assert summarize.main([str(sweep)]) == 1  # a failed job makes the exit status 1
    out = capsys.readouterr().out
    assert "2 jobs, 1 failed" in out and "failed: RuntimeError: boom" in out
    assert len(read_csv(sweep / "summary.csv")) == 2

    with pytest.raises(SystemExit) as e:
        summarize.main([str(tmp_path / "missing")])
    assert e.value.code == 2
    assert f"error: sweep directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        summarize.main([str(tmp_path / "empty")])
    assert "holds no sweep jobs" in capsys.readouterr().err


def test_record_failure_keeps_the_runners_record_and_marks_late_failures(tmp_path: Path) -> None:
    record_failure(tmp_path, ValueError("bad value"), 1.234)
    first = json.loads((tmp_path / "metrics.json").read_text())
    assert first["stop_reason"] == "failed: ValueError: bad value" and first["duration_s"] == 1.23
    (tmp_path / "metrics.json").write_text(json.dumps(metrics_of(0.9, 2)))  # trained, then evaluation failed
    record_failure(tmp_path, OSError("disk full"), 9.0)
    late = json.loads((tmp_path / "metrics.json").read_text())
    assert late["stop_reason"] == "failed: OSError: disk full" and late["best"]["value"] == 0.9
    (tmp_path / "metrics.json").write_text(json.dumps(metrics_of(0.9, 2, "failed: KeyError: 'x'")))
    record_failure(tmp_path, RuntimeError("later"), 9.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["stop_reason"] == "failed: KeyError: 'x'"
    assert overridden(["a=1", "++training.auto_resume=false"], "training.auto_resume")
    assert not overridden(["training.auto_resume_x=1"], "training.auto_resume")


def test_cpu_oversubscription_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("joblib")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    cfg = OmegaConf.create(
        {
            "hydra": {"launcher": {"_target_": "x.JoblibLauncher", "n_jobs": 2}},
            "data": {"num_workers": 3},
        }
    )
    message = cpu_oversubscription(cfg)
    assert message is not None
    assert "2 parallel jobs x (1 trainer + 3 data.num_workers) = 8 busy processes on 4 CPU cores" in message
    assert "data.num_workers=1" in message
    cfg.data.num_workers = 1
    assert cpu_oversubscription(cfg) is None
    cfg.data.num_workers = 3
    cfg.hydra.launcher._target_ = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert cpu_oversubscription(cfg) is None


def test_parallel_workers_get_distinct_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each joblib worker claims the lowest free slot; a worker whose slot is taken gets the next GPU."""
    monkeypatch.setattr(gpu_slots, "_claimed", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    other_worker = gpu_slots.FileLock(gpu_slots.lock_dir(tmp_path) / "slot-0.lock")
    other_worker.acquire()
    try:
        assert gpu_slots.assign_gpu(tmp_path, parallel_jobs=2) == "5"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        assert gpu_slots.assign_gpu(tmp_path, parallel_jobs=2) == "5"  # the worker's next job keeps it
    finally:
        other_worker.release()
        lock, _ = gpu_slots._claimed
        lock.release()
    monkeypatch.setattr(gpu_slots, "_claimed", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_slots.assign_gpu(tmp_path, parallel_jobs=2) is None  # one GPU: nothing to split
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_slurm_preset_sets_resources_without_warnings() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with warnings.catch_warnings(record=True) as caught:
        register_configs()  # as train.py does at import (pytest resets warning filters around each test)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", ["hydra/launcher=submitit_slurm"], return_hydra_config=True)
    assert not [w for w in caught if "ConfigStore schema" in str(w.message)]
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 720)
    assert (launcher.array_parallelism, launcher.max_num_timeout, launcher.signal_delay_s) == (8, 3, 120)
    built = instantiate(launcher)
    assert built.params["partition"] == "gpu" and built.params["tasks_per_node"] == 1


@pytest.mark.slow
@pytest.mark.cli
def test_failed_job_is_summarised_and_the_sweep_goes_on(tmp_path: Path, folder_dataset: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    args = sweep_args(tmp_path, folder_dataset)
    args[args.index(f"data.root={folder_dataset}")] = f"data.root={folder_dataset},{missing}"
    proc = run_cli(args, cwd=tmp_path, timeout=300)

    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 of 2 sweep jobs failed (job 1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    sweep = the_sweep(tmp_path)
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")]
    trained = json.loads((sweep / "0" / "metrics.json").read_text())
    assert float(rows[0]["best"]) == pytest.approx(trained["best"]["value"])
    assert float(rows[0]["final val/auc"]) == pytest.approx(trained["final"]["val/auc"])
    assert rows[1]["error"].startswith(f"DataError: data.root={missing} does not exist")
    assert f"error: data.root={missing} does not exist" in (sweep / "1" / "train.log").read_text()
    assert "2 jobs, 1 failed" in proc.stdout  # the table is printed at the end
    assert "Job 1 failed: DataError" in (sweep / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.cli
def test_optuna_search_records_best_params_and_continues_from_storage(
    tmp_path: Path, folder_dataset: Path
) -> None:
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli(
        sweep_args(
            tmp_path, folder_dataset, "hparams_search=optuna", "hydra.sweeper.n_trials=3", searched=SPACE
        ),
        cwd=tmp_path,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == set(SPACE)
    jobs = {p.name: json.loads((p / "metrics.json").read_text()) for p in sweep.iterdir() if p.name.isdigit()}
    assert sorted(jobs) == ["0", "1", "2"]
    best_job = max(jobs, key=lambda j: jobs[j]["best"]["value"])
    assert results.best_value == pytest.approx(jobs[best_job]["best"]["value"])
    overrides = OmegaConf.load(sweep / best_job / ".hydra" / "overrides.yaml")
    assert f"training.batch_size={results.best_params['training.batch_size']}" in overrides
    assert len(read_csv(sweep / "summary.csv")) == 3
    assert "## Optuna (optimization_results.yaml)" in (sweep / "summary.md").read_text()

    # A later sweep continues the same study from the sqlite file in the first sweep's folder.
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    later = run_cli(
        sweep_args(
            tmp_path / "later",
            folder_dataset,
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.storage={storage}",
            searched=SPACE,
        ),
        cwd=tmp_path,
        timeout=300,
    )
    assert later.returncode == 0, later.stderr[-3000:]
    study = optuna.load_study(study_name="deepfake", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


@pytest.mark.slow
@pytest.mark.cli
def test_joblib_launcher_runs_two_jobs_and_exits(tmp_path: Path, folder_dataset: Path) -> None:
    """With loader workers: the sweep printed its summary and never exited, because the loky workers' exit
    waited on the persistent DataLoader workers the jobs left running (they ignore SIGTERM)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_cli(
        sweep_args(
            tmp_path,
            folder_dataset,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "training.learning_rate=1e-3,3e-4",
            "data.num_workers=1",
            "data.persistent_workers=true",
        ),
        cwd=tmp_path,
        timeout=240,  # a hang fails here (subprocess.TimeoutExpired) instead of stalling the suite
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is launching 2 jobs" in proc.stdout + proc.stderr
    sweep = the_sweep(tmp_path)
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.pt").is_file()
        assert OmegaConf.load(sweep / job / ".hydra/config.yaml").data.num_workers == 1  # loader workers ran


@pytest.mark.slow
@pytest.mark.cli
def test_submitit_local_runs_a_two_task_ddp_job_that_would_requeue_into_the_same_run_dir(
    tmp_path: Path, folder_dataset: Path
) -> None:
    """One job with two tasks, as `tasks_per_node` on SLURM: the tasks train together (DDP, gloo)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli(
        sweep_args(
            tmp_path, folder_dataset, "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = the_sweep(tmp_path)
    job = sweep / "0"
    assert json.loads((job / "metrics.json").read_text())["stop_reason"] == "completed"
    assert "distributed: 2 processes, backend gloo" in (job / "train.log").read_text()
    assert [r["status"] for r in read_csv(sweep / "summary.csv")] == ["completed"]
    saved = OmegaConf.create(torch.load(job / "checkpoints" / "last.pt", weights_only=True)["config"])
    assert saved.training.auto_resume is True  # a requeued job continues from last.pt

    # A requeue re-runs the pickled submission; its sweep dir must resolve to the same folder, later.
    from hydra.core.utils import setup_globals

    setup_globals()  # registers ${now:}, as the launcher does in the job process
    (submitted,) = sweep.glob(".submitit/*/*_submitted.pkl")
    with open(submitted, "rb") as f:
        submission = pickle.load(f)
    launcher = submission.function
    overrides, job_dir_key, job_num = submission.args[:3]
    again = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    again.hydra.job.num = job_num
    resolved = Path(OmegaConf.select(again, job_dir_key)) / str(OmegaConf.select(again, "hydra.sweep.subdir"))
    assert resolved.resolve() == job.resolve()
