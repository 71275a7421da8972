"""Flip TTA against a manual two-pass computation, ensembles of members with different input sizes against
the mean of their single predictions (prob and logit means), and the checks on `checkpoint=`."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.calibration import expected_calibration_error
from deepfake.evaluation.ensemble import Ensemble, Member, checkpoint_list
from deepfake.evaluation.tta import tta_logits
from deepfake.model.detector import get_model
from deepfake.prediction.driver import predict
from deepfake.reporting.eval_sets import evaluate
from deepfake.runs.checkpoint import build_state, save_checkpoint
from deepfake.system.precision import Precision
from deepfake.training.validation import validate
from tests.conftest import make_flat_test_set
from tests.pages import parse

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model("tiny", img_size=size).eval()


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@torch.no_grad()
def test_flip_tta_is_the_mean_of_the_image_and_its_mirror_probabilities() -> None:
    model, x = tiny(32, 0), images(6, 32)
    manual = (torch.sigmoid(model(x)) + torch.sigmoid(model(torch.flip(x, dims=[3])))) / 2
    plain = torch.sigmoid(model(x))
    assert not torch.allclose(manual, plain, atol=1e-4)  # the mirror really changes the score
    assert torch.allclose(torch.sigmoid(tta_logits(model, x, "flip")), manual, atol=1e-6)
    # the same number in training's validation pass, and in the scorer evaluate and predict use
    loader = [
        (x[:4], torch.zeros(4, dtype=torch.long), torch.arange(4)),
        (x[4:], torch.ones(2), torch.arange(4, 6)),
    ]
    _, probs, index = validate(model, loader, Precision("cpu", None), torch.device("cpu"), tta="flip")
    assert index.tolist() == list(range(6))
    assert np.allclose(probs, manual.numpy(), atol=1e-6)
    assert torch.allclose(Ensemble([Member(model, 32)], tta="flip")(x), manual, atol=1e-6)
    _, probs, _ = validate(model, loader, Precision("cpu", None), torch.device("cpu"))
    assert np.allclose(probs, plain.numpy(), atol=1e-6)


@torch.no_grad()
def test_an_ensemble_resizes_per_member_applies_temperatures_and_averages() -> None:
    """Crops at 40 px for members trained at 32 and 48 px, temperatures 2 and 0.5."""
    a, b, x = tiny(32, 1), tiny(48, 2), images(5, 40)
    za = a(TF.resize(x, [32, 32], antialias=True)) / 2.0
    zb = b(TF.resize(x, [48, 48], antialias=True)) / 0.5
    members = [Member(a, 32, 2.0), Member(b, 48, 0.5)]
    prob_mean = Ensemble(members, mean="prob")(x)
    assert prob_mean.dtype == torch.float32 and prob_mean.shape == (5,)
    assert torch.allclose(prob_mean, (torch.sigmoid(za) + torch.sigmoid(zb)) / 2, atol=1e-6)
    assert torch.allclose(Ensemble(members, mean="logit")(x), torch.sigmoid((za + zb) / 2), atol=1e-6)
    assert Ensemble(members).groups() == {32: [0], 48: [1]}
    # with flip TTA, each member's flip mean comes first, then its temperature, then the ensemble mean
    flip_a = torch.logit(
        (
            torch.sigmoid(a(TF.resize(x, [32, 32], antialias=True)))
            + torch.sigmoid(a(TF.resize(x.flip(-1), [32, 32], antialias=True)))
        )
        / 2,
        eps=None,
    )
    flip_b = torch.logit(
        (
            torch.sigmoid(b(TF.resize(x, [48, 48], antialias=True)))
            + torch.sigmoid(b(TF.resize(x.flip(-1), [48, 48], antialias=True)))
        )
        / 2,
        eps=None,
    )
    expected = (torch.sigmoid(flip_a / 2.0) + torch.sigmoid(flip_b / 0.5)) / 2
    assert torch.allclose(Ensemble(members, tta="flip")(x), expected, atol=1e-5)


def test_checkpoint_takes_one_path_or_a_list_of_paths() -> None:
    assert checkpoint_list("run") == ["run"]
    assert checkpoint_list(OmegaConf.create({"c": ["a", "b"]}).c) == ["a", "b"]
    for bad in ([], [1, 2], ["a", ""], 3):
        with pytest.raises(ConfigError, match=r"is neither a path nor a list of paths"):
            checkpoint_list(bad)
    with pytest.raises(ConfigError, match=r"ensemble.mean='median' is not one of prob, logit"):
        Ensemble([], mean="median")


def save_detector(path: Path, size: int, seed: int, temperature: float | None) -> Path:
    state = build_state(model=tiny(size, seed))
    if temperature is not None:
        state["calibration"] = {"temperature": temperature}
    return save_checkpoint(path, state)


def predicted(tmp_path: Path, name: str, **cfg: object) -> dict[str, float | None]:
    out = tmp_path / f"{name}.json"
    predict(
        OmegaConf.create(
            {
                "input": str(tmp_path / "images"),
                "output": str(out),
                "num_workers": 0,
                "hardware": {"num_threads": 1},
                **cfg,
            }
        )
    )
    return {Path(r["path"]).name: r["prob"] for r in json.loads(out.read_text())["predictions"]}


def test_an_ensemble_of_two_input_sizes_equals_the_mean_of_the_single_predictions(tmp_path: Path) -> None:
    """predict.py: members at 32 px (temperature 1.5) and 48 px (uncalibrated) on 40 px images and a broken file."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{i}.png"
        )
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    a = str(save_detector(tmp_path / "a.pt", 32, 1, 1.5))
    b = str(save_detector(tmp_path / "b.pt", 48, 2, None))
    single_a, single_b = predicted(tmp_path, "a", checkpoint=a), predicted(tmp_path, "b", checkpoint=b)
    raw_a = predicted(tmp_path, "raw", checkpoint=a, calibrated=False)
    both = predicted(tmp_path, "both", checkpoint=[a, b])
    logit = predicted(tmp_path, "logit", checkpoint=[a, b], ensemble={"mean": "logit"})
    assert both["broken.png"] is None and logit["broken.png"] is None
    for name in ("0.png", "1.png", "2.png"):
        pa, pb = single_a[name], single_b[name]
        assert both[name] == pytest.approx((pa + pb) / 2, abs=1e-6)
        mean_logit = (np.log(pa / (1 - pa)) + np.log(pb / (1 - pb))) / 2
        assert logit[name] == pytest.approx(1 / (1 + np.exp(-mean_logit)), abs=1e-6)
        # the temperature is applied by default: raw logit / 1.5
        za = np.log(raw_a[name] / (1 - raw_a[name]))
        assert pa == pytest.approx(1 / (1 + np.exp(-za / 1.5)), abs=1e-6)


def test_a_bad_temperature_in_any_member_is_refused_naming_its_file(tmp_path: Path) -> None:
    a = str(save_detector(tmp_path / "a.pt", 32, 1, 1.5))
    b = str(save_detector(tmp_path / "b.pt", 48, 2, float("nan")))
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "images" / "face.png")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'b.pt'}: its calibration temperature \('nan'\)"):
        predicted(tmp_path, "x", checkpoint=[a, b])
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_evaluate_reports_each_member_and_the_ensemble_side_by_side(
    tmp_path: Path, compose_cfg: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """evaluate.py with checkpoint=[a,b] (32 px with temperature 1.5, 48 px uncalibrated) on one test set."""
    test_set = make_flat_test_set(tmp_path / "dfdc")
    a = str(save_detector(tmp_path / "a.pt", 32, 1, 1.5))
    b = str(save_detector(tmp_path / "b.pt", 48, 2, None))

    def run(checkpoint: str, out: str, *extra: str) -> dict:
        overrides = [
            f"checkpoint={checkpoint}", f"data.test_sets=[{test_set}]", "data.num_workers=0",
            "eval.bootstrap_samples=0", "hardware.num_threads=1", f"eval.out_dir={tmp_path / out}", *extra,
        ]  # fmt: skip
        return evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)["dfdc"]

    single = [run(a, "a"), run(b, "b")]
    with caplog.at_level(logging.INFO, logger="deepfake"):
        both = run(f"[{a},{b}]", "both", "ensemble.mean=logit")
    probs = {name: read_probs(tmp_path / name / "dfdc" / "predictions.csv") for name in ("a", "b", "both")}
    za, zb = (np.log(probs[k] / (1 - probs[k])) for k in ("a", "b"))
    assert np.allclose(probs["both"], 1 / (1 + np.exp(-(za + zb) / 2)), atol=1e-6)
    assert both["ensemble"] == {"members": 2, "mean": "logit", "tta": "none"}
    assert both["calibration"]["temperature"] == [1.5, 1.0]
    for member, alone, path in zip(both["members"], single, (a, b), strict=True):
        assert member["checkpoint"] == path
        assert member["frame"]["auc"] == pytest.approx(alone["frame"]["auc"], abs=1e-9)
        for when in ("raw", "calibrated"):
            assert member["calibration"][when] == pytest.approx(alone["calibration"][when])
    # the single 32 px model: its report says how the temperature moved log loss and ECE
    labels = read_labels(tmp_path / "a" / "dfdc" / "predictions.csv")
    assert single[0]["calibration"]["temperature"] == 1.5
    assert single[0]["calibration"]["calibrated"]["ece"] == pytest.approx(
        expected_calibration_error(labels, probs["a"])
    )
    assert single[0]["frame"]["loss"] == pytest.approx(single[0]["calibration"]["calibrated"]["log_loss"])
    raw = 1 / (1 + np.exp(-za * 1.5))
    assert single[0]["calibration"]["raw"]["ece"] == pytest.approx(expected_calibration_error(labels, raw))
    assert (tmp_path / "both" / "dfdc" / "reliability.png").is_file()
    table = caplog.text
    for row in ("| dfdc #1 ", "| dfdc #2 ", "| dfdc ensemble "):
        assert row in table
    assert f"#1: {a}" in table and f"#2: {b}" in table
    ensemble_row = next(line for line in table.splitlines() if line.startswith("| dfdc ensemble "))
    assert f"{both['frame']['auc']:.4f}" in ensemble_row
    # report.html puts the members side by side: one column each, then the ensemble
    page = parse((tmp_path / "both" / "report.html").read_text())
    rows = {r[0]: r[1:] for r in page.tables["ensemble-table"]}
    assert rows[""] == ["#1", "#2", "ensemble"] and rows["checkpoint"][:2] == [a, b]
    assert rows["dfdc: AUC"] == [f"{m['frame']['auc']:.4f}" for m in (*both["members"], both)]
    assert rows["temperature"][:2] == ["1.5000", "1.0000"]  # b has none: it divides by 1


def read_probs(path: Path) -> np.ndarray:
    with open(path, newline="") as f:
        return np.array([float(r["prob"]) for r in csv.DictReader(f)])


def read_labels(path: Path) -> np.ndarray:
    with open(path, newline="") as f:
        return np.array([int(r["label"]) for r in csv.DictReader(f)])
