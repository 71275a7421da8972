"""The Python API from a user's own script outside the repository, and the console scripts from any directory."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import deepfake
from deepfake.commands.conf import compose, conf_dir
from tests.conftest import ROOT, make_folder_dataset

SCRIPT = """
import json, sys
from deepfake import Config, evaluate, predict, train

try:
    import train as repo_script  # the repository's train.py: not importable from here
    sys.exit("the repository is on sys.path")
except ModuleNotFoundError:
    pass
config = Config(base_path=sys.argv[1], use_drive=False)
config.model.architecture = "tiny"
config.data.kind, config.data.root = "folder", sys.argv[2]
config.data.img_size, config.data.num_workers = 32, 0
config.training.batch_size, config.training.num_epochs = 8, 1
config.backup.enabled = False
best = train(config)
(run,) = [p for p in __import__("pathlib").Path(sys.argv[1], "outputs").glob("*/*")]
rows = predict(f"checkpoint={run}", f"input={sys.argv[2]}/test", "output=api.csv", "num_workers=0")
scores = evaluate(f"checkpoint={run}", f"data.test_sets=[{sys.argv[2]}]", "data.num_workers=0",
                  "eval.bootstrap_samples=0", f"eval.out_dir={sys.argv[1]}/api_eval")
print(json.dumps({"best": best, "run": str(run), "probs": {r["path"]: r["prob"] for r in rows},
                  "auc": {name: s["frame"]["auc"] for name, s in scores.items()}}))
"""


def script_env() -> dict[str, str]:
    """The user's environment: the installed package, no PYTHONPATH pointing into the repository."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONUNBUFFERED": "1"}


def console(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = Path(sys.executable).parent / name  # installed beside the interpreter by pip install -e .
    return subprocess.run([str(command), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=script_env())  # fmt: skip


def test_import_deepfake_is_light_and_names_the_api() -> None:
    assert {"Config", "train", "evaluate", "predict", "extract", "compose"} <= set(deepfake.__all__)
    from deepfake.config import Config
    from deepfake.training.runner import train

    assert deepfake.Config is Config and deepfake.train is train
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = deepfake.nope


def test_compose_applies_the_config_groups_a_dataclass_does_not() -> None:
    """`compose` reads conf/ wherever the package is: presets and groups, as on the command line."""
    assert conf_dir() == ROOT / "conf"
    cfg = compose("train", ["experiment=dfb_effb4", "data=manifest", "data.manifest=/x.csv"])
    assert (cfg.model.architecture, cfg.model.img_size, cfg.data.kind) == (
        "tf_efficientnet_b4.in1k",
        256,
        "manifest",
    )
    assert compose("extract", ["root=/r", "out=/o"]).frames_per_video == 32


@pytest.mark.parametrize("name", ["train", "evaluate", "predict", "extract"])
def test_each_console_script_runs_what_its_repository_script_runs(name: str) -> None:
    """`deepfake-<name>` (as installed) and `python <name>.py` call the same function, so they behave alike."""
    found = [e for e in entry_points(group="console_scripts") if e.name == f"deepfake-{name}"]
    assert found, f"deepfake-{name} is not installed: rerun pip install -e . (pyproject.toml declares it)"
    entry = found[0]
    command = importlib.import_module(f"deepfake.commands.{name}")
    assert entry.load() is command.run
    shim = ast.parse((ROOT / f"{name}.py").read_text())
    imported = {(n.module, a.name) for n in ast.walk(shim) if isinstance(n, ast.ImportFrom) for a in n.names}
    called = {n.func.id for n in ast.walk(shim) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert (f"deepfake.commands.{name}", "run") in imported and called == {"run"}


@pytest.mark.cli
def test_the_api_from_a_script_outside_the_repo_and_the_console_scripts(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    user = tmp_path / "user"
    user.mkdir()
    (user / "my_experiment.py").write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([sys.executable, "my_experiment.py", str(user / "runs"), str(data)], cwd=user,
                          capture_output=True, text=True, timeout=300, env=script_env())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 <= result["best"] <= 1 and len(result["probs"]) == 8  # 2 real + 2 fake videos x 2 frames
    assert (Path(result["run"]) / "checkpoints" / "best.pt").is_file() and (user / "api.csv").is_file()
    ((name, auc),) = result["auc"].items()  # one test set: the data folder's test split
    assert "data" in name and 0 <= auc <= 1
    # The console scripts, from yet another directory: the same predictions as the API's predict().
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = console("deepfake-predict", f"checkpoint={result['run']}", f"input={data}/test", "output=cli.csv",
                  "num_workers=0", cwd=elsewhere)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    with (elsewhere / "cli.csv").open() as f:
        cli = {row["path"]: float(row["prob"]) for row in csv.DictReader(f)}
    assert cli == pytest.approx(result["probs"], abs=1e-6)
