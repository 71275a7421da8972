"""The debug modes (conf/debug/, the `debug` config section): batch limits, fixed overfit batches, the overfit
verdict, the throwaway run folder and the profiler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.config import to_config
from deepfake.data.dataset import EpochSampler, LimitedSampler
from deepfake.data.module import DataModule
from deepfake.errors import ConfigError
from deepfake.training.debug import OverfitCheckFailed
from tests.conftest import ROOT, run_cli
from tests.runs import make_config


def _debug_run(base: Path) -> Path:
    (run,) = [p for p in (base / "debug").glob("*/*") if p.is_dir()]
    return run


def test_limited_sampler_keeps_a_prefix_and_fixed_repeats_epoch_zero() -> None:
    limited = LimitedSampler(EpochSampler(20, seed=3, shuffle=True), 6)
    orders = []
    for epoch in (0, 1):
        limited.set_epoch(epoch)
        full = EpochSampler(20, seed=3, shuffle=True)
        full.set_epoch(epoch)
        assert [i for i, _ in limited] == full.order()[:6]
        orders.append([i for i, _ in limited])
    assert len(limited) == 6
    assert orders[0] != orders[1]  # a plain limit reshuffles every epoch

    fixed = LimitedSampler(EpochSampler(20, seed=3, shuffle=True), 6, fixed=True)
    epochs = []
    for epoch in range(3):
        fixed.set_epoch(epoch)
        epochs.append(list(fixed))
    assert epochs[0] == epochs[1] == epochs[2]  # same indices, same epoch key: the same augmentation too
    assert {e for _, e in epochs[2]} == {0}
    fixed.set_epoch(5, start=4)  # a mid-epoch resume continues within the fixed batch
    assert [i for i, _ in fixed] == [i for i, _ in epochs[0]][4:]


def test_limited_validation_takes_evenly_spaced_samples() -> None:
    """Validation rows sorted by class (all real, then all fake) still give both classes when limited."""
    limited = LimitedSampler(EpochSampler(100, shuffle=False), 4)
    assert [i for i, _ in limited] == [0, 25, 50, 75]


def test_datamodule_limits_are_a_fraction_or_a_count(folder_dataset: Path) -> None:
    data = DataModule(kind="folder", root=str(folder_dataset), img_size=32, num_workers=0, batch_size=4)
    data.setup()  # 24 train images: 6 batches of 4; 24 val images: 3 eval batches of 8
    assert len(data.train_dataloader()) == 6
    assert len(data.train_dataloader(0.5)) == 3
    assert len(data.train_dataloader(2)) == 2
    assert len(data.train_dataloader(1)) == 1  # an int counts batches
    assert len(data.eval_dataloader("val", 1)) == 1
    assert len(data.eval_dataloader("val", 0.34)) == 1
    assert len(data.eval_dataloader("val")) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"limit_train_batches": 1.5},
            "debug.limit_train_batches must be a fraction in (0, 1] or a whole count",
        ),
        ({"limit_val_batches": 0.0}, "debug.limit_val_batches must be a fraction"),
        ({"fast": True, "overfit_batches": 2}, "debug.fast and debug.overfit_batches"),
        ({"overfit_batches": 2, "limit_train_batches": 3}, "debug.overfit_batches sets the train batches"),
        ({"profiler": {"active": 0}}, "debug.profiler needs wait >= 0, warmup >= 0, active >= 1"),
    ],
)
def test_debug_values_are_checked(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_config({"debug": overrides})


@pytest.mark.slow
def test_fast_run_goes_through_every_writer_in_the_debug_folder(tmp_path: Path, folder_dataset: Path) -> None:
    from train import train

    cfg = make_config(tmp_path, folder_dataset, **{"debug.fast": True, "training.num_epochs": 3})
    train(cfg)
    assert not (tmp_path / "outputs").exists()
    run = _debug_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stop_reason"] == "debug.fast: one epoch done"
    assert (
        metrics["epochs_completed"] == 1 and metrics["global_step"] == 1
    )  # one micro-batch (accumulation 2) = one step
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}
    assert list(run.glob("events.out.tfevents.*"))
    assert list((run / "backups").glob("*.tar.gz"))
    assert (run / "plots" / "loss.png").is_file()
    assert json.loads((run / "model_summary.json").read_text())["parameters"] > 0
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    assert "model/summary/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_overfit_check_that_misses_its_target_fails(tmp_path: Path, folder_dataset: Path) -> None:
    cfg = make_config(
        tmp_path, folder_dataset,
        **{"debug.overfit_batches": 1, "debug.overfit_loss": 1e-6, "training.num_epochs": 2},
    )  # fmt: skip
    from train import train

    with pytest.raises(
        OverfitCheckFailed, match=r"overfit check failed: loss \d\.\d{4} >= 1e-06 after 2 epochs"
    ) as e:
        train(cfg)
    assert e.value.exit_code == 1
    metrics = json.loads((_debug_run(tmp_path) / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2


@pytest.mark.slow
def test_overfit_check_passes_on_a_learnable_batch(tmp_path: Path, folder_dataset: Path, caplog) -> None:
    from train import train

    cfg = make_config(
        tmp_path, folder_dataset,
        **{"debug.overfit_batches": 1, "debug.overfit_loss": 0.3, "training.num_epochs": 40,
           "training.grad_accum_steps": 1, "training.ema.enabled": False, "model.dropout_rate": 0.0,
           "training.learning_rate": 1e-2, "training.checkpoint.every_n_steps": None},
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="deepfake"):
        train(cfg)
    messages = [r.getMessage() for r in caplog.records if r.name == "deepfake"]
    passed = [m for m in messages if "passed" in m]
    assert len(passed) == 1 and passed[0] == messages[-1], passed  # said once, as the run's last line
    assert passed[0].startswith("overfit check passed") and "(1 fixed batches of 4)" in passed[0]
    loss = float(passed[0].split("loss ")[1].split(" <")[0])
    assert loss < 0.3
    stop = json.loads((_debug_run(tmp_path) / "metrics.json").read_text())["stop_reason"]
    assert stop.startswith(f"debug.overfit_batches: loss {loss:.4f} < 0.3 after ") and stop in messages


@pytest.mark.slow
def test_profiler_writes_a_trace_and_logs_the_top_operators(
    tmp_path: Path, folder_dataset: Path, caplog
) -> None:
    from train import train

    cfg = make_config(
        tmp_path, folder_dataset,
        **{"debug.profiler.enabled": True, "debug.profiler.wait": 1, "debug.profiler.warmup": 1,
           "debug.profiler.active": 1, "training.num_epochs": 1, "training.grad_accum_steps": 1,
           "debug.limit_train_batches": 3},
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="deepfake"):
        train(cfg)
    run = _debug_run(tmp_path)
    assert list((run / "profiler").glob("*.pt.trace.json"))
    (table,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("profiler: top operators")
    ]
    assert "Self CPU" in table and "aten::" in table


@pytest.mark.cli
@pytest.mark.parametrize(
    ("preset", "expected", "written"),
    [
        ("debug=fast", "debug.fast: one epoch done", "backups/*.tar.gz"),
        ("debug=limit", "debug limits: 1 train and 1 val batches per epoch", "checkpoints/last.pt"),
        (
            "debug=profile",
            "profiler: top operators of 3 steps by self_cpu_time_total",
            "profiler/*.pt.trace.json",
        ),
    ],
)
def test_debug_presets_from_the_command_line(
    preset: str, expected: str, written: str, tmp_path: Path, folder_dataset: Path
) -> None:
    args = [
        str(ROOT / "train.py"), preset, "model=tiny", "data=folder", f"data.root={folder_dataset}",
        "data.img_size=32", "data.num_workers=0", "training.batch_size=4", "training.num_epochs=1",
        f"base_path={tmp_path}",
    ]  # fmt: skip
    proc = run_cli(args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout + proc.stderr
    run = _debug_run(tmp_path)
    assert (run / ".hydra" / "overrides.yaml").is_file() and (run / "metrics.json").is_file()
    assert list(run.glob(written)) and (run / "model_summary.json").is_file()


@pytest.mark.cli
def test_overfit_preset_exits_1_when_the_check_fails(tmp_path: Path, folder_dataset: Path) -> None:
    args = [
        str(ROOT / "train.py"), "debug=overfit", "debug.overfit_batches=1", "debug.overfit_loss=1e-6",
        "training.num_epochs=2", "model=tiny", "data=folder", f"data.root={folder_dataset}", "data.img_size=32",
        "data.num_workers=0", "training.batch_size=4", f"base_path={tmp_path}",
    ]  # fmt: skip
    proc = run_cli(args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert (
        line.startswith("error: overfit check failed: loss ")
        and "after 2 epochs (1 fixed batches of 4)" in line
    )
    assert "Traceback" not in proc.stderr
