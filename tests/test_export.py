"""deepfake.evaluation.export: every format gives the probabilities the checkpoint gives, on the same uint8 images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from deepfake.data.dataset import FaceDataset
from deepfake.data.samples import scan_split
from deepfake.data.transforms import eval_transform
from deepfake.errors import ConfigError
from deepfake.evaluation.export import export
from deepfake.evaluation.inference import TRAINING_ONLY, load_detector
from deepfake.extraction.config import register_extract_config
from deepfake.extraction.settings import settings_of
from deepfake.prediction.driver import predict
from deepfake.runs.checkpoint import load_checkpoint
from tests.conftest import CONF, ROOT, run_cli
from tests.videos import VideoSet

register_extract_config()
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))


def sample_images(trained_run: dict) -> torch.Tensor:
    """A batch of real test images, decoded the way evaluation decodes them (uint8, the saved size)."""
    samples = scan_split(trained_run["celebdf"], "test", ["real"], ["fake"])[:7]
    dataset = FaceDataset(samples, eval_transform(32), decode_size=32)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def reference_probs(trained_run: dict, images: torch.Tensor, calibrated: bool = True) -> np.ndarray:
    """The checkpoint's probabilities: calibrated by its fitted temperature (predict's default), or raw."""
    loaded = load_detector(trained_run["run"])
    assert loaded.temperature is not None  # the run fitted one at its end
    with torch.no_grad():
        return torch.sigmoid(loaded.model(images) / (loaded.temperature if calibrated else 1.0)).numpy()


@pytest.mark.slow
@pytest.mark.cli
def test_safetensors_via_the_command_line_reloads_to_the_same_probabilities(
    trained_run: dict, tmp_path: Path
) -> None:
    proc = run_cli(
        [
            "-m",
            "deepfake.export",
            f"checkpoint={trained_run['run']}",
            "format=safetensors",
            f"output={tmp_path / 'm.safetensors'}",
        ],
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = load_detector(tmp_path / "m.safetensors")
    assert loaded.model.architecture == "test_resnet" and loaded.img_size == 32
    assert "dropout_rate" in loaded.config.model
    images = sample_images(trained_run)
    with torch.no_grad():
        probs = torch.sigmoid(loaded.model(images)).numpy()
    np.testing.assert_allclose(probs, reference_probs(trained_run, images, False), rtol=0, atol=1e-7)
    assert loaded.temperature == load_detector(trained_run["run"]).temperature
    assert (
        loaded.operating_point == load_detector(trained_run["run"]).operating_point
    )  # threshold=val_fpr works
    card = (tmp_path / "MODEL_CARD.md").read_text()  # the run's card, next to the exported model
    assert card == (trained_run["run"] / "MODEL_CARD.md").read_text() and "model-index" in card


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated")
def test_torchscript_runs_without_the_package_and_gives_the_same_probabilities(trained_run: dict) -> None:
    out = export(trained_run["run"], "torchscript")
    assert out == trained_run["run"] / "export" / "best.torchscript.pt"
    extra = {"preprocess.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["preprocess.json"])["img_size"] == 32
    images = sample_images(trained_run)
    with torch.no_grad():
        probs = scripted(images).numpy()
    assert probs.shape == (len(images),)  # traced with a batch of 2, runs any batch size
    np.testing.assert_allclose(probs, reference_probs(trained_run, images), rtol=0, atol=1e-6)
    out.unlink()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNX, reason="onnx export needs the optional onnx and onnxscript packages")
def test_onnx_gives_the_same_probabilities(trained_run: dict, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = export(trained_run["run"], "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(out))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["preprocess"])["img_size"] == 32 and meta["architecture"] == "test_resnet"
    images = sample_images(trained_run)
    (probs,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(probs, reference_probs(trained_run, images), rtol=0, atol=1e-5)


def test_unknown_format_and_missing_onnx_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format='tflite' is not one of safetensors, torchscript, onnx"):
        export(tmp_path, "tflite")
    if not HAS_ONNX:
        with pytest.raises(ConfigError, match=r"format=onnx needs .*pip install onnx onnxscript"):
            export(tmp_path, "onnx")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated")
def test_an_export_predicts_a_video_as_its_checkpoint_does(
    trained_run: dict, test_videos: VideoSet, tmp_path: Path
) -> None:
    """The extraction settings, the temperature and any other entry prediction needs travel in every export."""
    state = load_checkpoint(trained_run["run"] / "checkpoints" / "best.pt")
    with initialize_config_dir(config_dir=str(CONF / "extract"), version_base="1.3"):
        extraction = settings_of(compose("extract", ["root=/r", "out=/o", "frames_per_video=3",
                                                     "detector.min_face_size=20", "detector.device=cpu"]))  # fmt: skip
    state |= {"extraction": extraction, "provenance": {"faces": "ffpp c23"}}  # any plain entry is carried
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(state, checkpoint)
    exported = export(checkpoint, "safetensors", tmp_path / "m.safetensors")
    rows = {
        name: predict({"checkpoint": str(path), "input": str(test_videos.pan), "num_workers": 0,
                       "output": str(tmp_path / f"{name}.csv")})[0]
        for name, path in (("checkpoint", checkpoint), ("export", exported))
    }  # fmt: skip
    assert rows["checkpoint"]["status"] == rows["export"]["status"] == "ok"
    assert rows["checkpoint"]["frames_used"] == rows["export"]["frames_used"] == 3  # not extract.py's 32
    assert rows["export"]["prob"] == pytest.approx(rows["checkpoint"]["prob"], abs=1e-6)
    loaded = load_detector(exported)
    assert loaded.temperature == load_detector(checkpoint).temperature is not None
    assert (loaded.checkpoint["extraction"], loaded.checkpoint["provenance"]) == (
        extraction,
        state["provenance"],
    )
    assert (
        "optimizer" not in loaded.checkpoint and "train_state" not in loaded.checkpoint
    )  # training state stays
    extra = {"metadata.json": ""}
    torch.jit.load(str(export(checkpoint, "torchscript", tmp_path / "m.ts")), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert {"calibration", "extraction", "provenance"} <= set(json.loads(meta["carried"]))
    assert not set(json.loads(meta["carried"])) & TRAINING_ONLY  # resume state (optimizer, tracker ids) stays
    assert json.loads(meta["extraction"]) == extraction
