"""Output paths and messages (issue 23, item 5): an output folder refused before inference, a broken
checkpoint in one line, evaluation results never overwritten by another evaluation, an ensemble's results in
their own folder, and a backup mirror that does not exist refused at the start."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from deepfake.data.sources import set_name_of
from deepfake.errors import UserError
from deepfake.evaluation.inference import load_detector
from deepfake.model.detector import get_model
from deepfake.prediction.driver import predict
from deepfake.reporting.eval_sets import ensemble_dir, evaluate, results_dir
from deepfake.runs.checkpoint import build_state, save_checkpoint
from deepfake.training.runner import train
from tests.conftest import FAST, make_folder_dataset


def test_predict_refuses_an_output_folder_before_reading_any_checkpoint(tmp_path: Path) -> None:
    """`output=out.csv` naming a folder ran the whole inference, then ended in a traceback."""
    (tmp_path / "out.csv").mkdir()
    (tmp_path / "face.png").write_bytes(b"")
    with pytest.raises(UserError) as caught:
        predict({"checkpoint": str(tmp_path / "never-read.pt"), "input": str(tmp_path / "face.png"),
                 "output": str(tmp_path / "out.csv")})  # fmt: skip
    assert str(caught.value) == (
        f"output {tmp_path / 'out.csv'} is a folder, not a file: pass output=<file>.csv (or .jsonl, .json, .parquet), e.g. "
        f"output={tmp_path / 'out.csv' / 'preds.csv'}"
    )
    (tmp_path / "p.frames.csv").mkdir()
    with pytest.raises(UserError, match=r"^per_frame's file .*p\.frames\.csv is a folder, not a file"):
        predict({"checkpoint": "x.pt", "input": str(tmp_path / "face.png"), "output": str(tmp_path / "p.csv"),
                 "per_frame": True})  # fmt: skip


@pytest.mark.parametrize("damage", ["yaml", "keys", "shapes"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid YAML in the saved config, or weights with other keys, were refused in 4 to 8 lines."""
    state = build_state(model=get_model("tiny", img_size=32))
    if damage == "yaml":
        state["config"] = "model: [unclosed\n  x: {"
    elif damage == "keys":
        state["model"]["bogus.weight"] = state["model"].pop(next(iter(state["model"])))
    else:
        key = next(k for k, v in state["model"].items() if v.ndim == 4)
        state["model"][key] = state["model"][key][:, :1]
    path = save_checkpoint(tmp_path / "damaged.pt", state)
    with caplog.at_level(logging.DEBUG), pytest.raises(UserError) as caught:
        load_detector(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    expected = {
        "yaml": f"the config saved in {path} cannot be read: ParserError: expected ',' or ']', but got ':' at "
        "line 2, column 4",
        "keys": f"the weights in {path} do not fit architecture test_resnet: 1 missing key(s) (e.g. ",
        "shapes": f"the weights in {path} do not fit architecture test_resnet: Error(s) in loading state_dict "
        "for DeepfakeDetector: size mismatch for ",
    }[damage]
    assert message.startswith(expected), message
    assert caplog.records and caplog.records[-1].levelno == logging.DEBUG  # torch's or YAML's full report


def test_sets_are_named_by_folder_and_stem() -> None:
    """Every extraction's manifest is manifest.csv: named by file name, three sets shared eval/manifest.csv."""
    assert set_name_of(Path("/data/celebdf_faces/manifest.csv")) == "celebdf_faces_manifest"
    assert set_name_of(Path("/data/dfdc_faces/manifest.csv")) == "dfdc_faces_manifest"
    assert set_name_of(Path("/data/celebdf/test")) == "celebdf_test"
    assert set_name_of(Path("/data/celebdf")) == "celebdf"


def test_results_of_another_evaluation_are_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = {"data": "/data/a/manifest.csv", "checkpoint": "/runs/1/best.pt", "settings": {"tta": "none"}}
    first = results_dir(tmp_path, "a_manifest", mine)
    assert first == tmp_path / "a_manifest"
    first.mkdir()
    (first / "metrics.json").write_text(json.dumps({"evaluation": mine}))
    assert results_dir(tmp_path, "a_manifest", mine) == first  # the same evaluation again: replaced
    other = {**mine, "data": "/data/b/manifest.csv"}
    with caplog.at_level(logging.WARNING):
        second = results_dir(tmp_path, "a_manifest", other)
    assert second == tmp_path / "a_manifest_2"
    assert f"{first} holds another evaluation's results (other data, checkpoints or settings): this " \
        f"evaluation's go to {second}" in caplog.text  # fmt: skip
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text("{}")  # written before results said what they were
    assert results_dir(tmp_path, "old", mine) == tmp_path / "old_2"


def test_an_ensembles_folder_is_its_own_and_named_by_its_members() -> None:
    a, b = Path("/o/2026-12-01/10-00-00/checkpoints/best.pt"), Path("/x/model_b.pt")
    folder = ensemble_dir([a, b])
    assert folder.parent == Path("ensembles") and folder.name.startswith("10-00-00+model_b-")
    assert ensemble_dir([a, Path("/y/model_b.pt")]) != folder  # same names, other files


@pytest.mark.slow
def test_an_ensemble_is_evaluated_into_its_own_folder(
    trained_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    compose_cfg: Callable[..., DictConfig],
) -> None:  # fmt: skip
    """An ensemble's results landed in its first member's run, over that run's own evaluation."""
    monkeypatch.chdir(tmp_path)
    run = trained_run["run"]
    before = (run / "eval" / "dfdc" / "metrics.json").read_text()
    best = run / "checkpoints" / "best.pt"
    overrides = [f"checkpoint=[{run},{best}]", f"data.test_sets=[{trained_run['dfdc']}]",
                 "eval.bootstrap_samples=0", "data.num_workers=0"]  # fmt: skip
    reports = evaluate(compose_cfg(overrides, "evaluate"), overrides)
    assert list(reports) == ["dfdc"]
    (written,) = (tmp_path / "ensembles").glob("*/dfdc/metrics.json")
    assert json.loads(written.read_text())["checkpoints"] == [str(best), str(best)]
    assert (run / "eval" / "dfdc" / "metrics.json").read_text() == before  # the member's run is untouched


def test_a_backup_mirror_that_does_not_exist_is_refused_at_the_start(
    tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    """It was a warning in the middle of the log, and nothing was copied."""
    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    cfg = compose_cfg([*FAST, "data=folder", f"data.root={data}", f"base_path={tmp_path}",
                       f"backup.mirror={tmp_path / 'drive'}"])  # fmt: skip
    with pytest.raises(UserError) as caught:
        train(cfg)
    assert str(caught.value).startswith(f"backup.mirror={tmp_path / 'drive'} does not exist or is not mounted: "
                                        f"create it (mkdir -p {tmp_path / 'drive'}), mount it")  # fmt: skip
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))
