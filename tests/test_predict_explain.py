"""predict.py explain=...: per scored face an overlay PNG and its heatmap, under names mirroring the inputs; the
maps of an ensemble with flip TTA are each member's and view's, averaged; an unknown layer is one error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake.data.decode import decode_file
from deepfake.errors import ConfigError
from deepfake.evaluation.inference import load_detector
from deepfake.explain.cam import cam_maps, resize_map
from deepfake.explain.target import cam_target
from deepfake.model.detector import get_model
from deepfake.prediction.driver import predict
from deepfake.prediction.videos import Aggregation, VideoResult, classify_video
from deepfake.runs.checkpoint import build_state, save_checkpoint
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untrained CNN (32 px) and ViT (48 px: a 3 x 3 patch grid) saved as detector checkpoints."""
    folder = tmp_path_factory.mktemp("explain_ckpt")
    torch.manual_seed(0)
    return {
        "cnn": save_checkpoint(folder / "cnn.pt", build_state(model=get_model("tiny", img_size=32))),
        "vit": save_checkpoint(folder / "vit.pt", build_state(model=get_model("test_vit", img_size=48))),
    }


def images(root: Path) -> Path:
    """Faces of several sizes (one not square), two with one stem in one folder, and an unreadable file."""
    rng = np.random.default_rng(0)
    for rel, (h, w) in {"a/face.png": (60, 80), "b/face.jpg": (40, 40), "b/face.png": (36, 36)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / rel)
    (root / "b" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_each_scored_image_gets_an_overlay_and_its_heatmap(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    source = images(tmp_path / "in")
    out = tmp_path / "out" / "preds.json"
    rows = predict(
        {"checkpoint": str(checkpoints["cnn"]), "input": str(source), "output": str(out), "num_workers": 0,
         "explain": {"method": "gradcam"}}
    )  # fmt: skip
    folder = tmp_path / "out" / "preds_explain"
    assert json.loads(out.read_text())["explain"] == {"method": "gradcam", "folder": str(folder)}
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    # input order a/face.png, b/broken.png (unreadable: nothing), b/face.jpg, b/face.png (same stem: _2)
    assert files == [f"{n}.{e}" for n in ("a/face", "b/face", "b/face_2") for e in ("npy", "png")]
    probs = {Path(r["path"]).relative_to(source).as_posix(): r["prob"] for r in rows}
    for name, side, image in (
        ("a/face", 60, "a/face.png"),
        ("b/face", 40, "b/face.jpg"),
        ("b/face_2", 36, "b/face.png"),
    ):
        heat = np.load(folder / f"{name}.npy")
        assert heat.dtype == np.float32 and heat.shape == (side, side)  # the centre square the model scores
        assert heat.min() >= 0 and heat.max() <= 1
        overlay = Image.open(folder / f"{name}.png")
        scale = -(-192 // side)
        assert overlay.size == (side * scale, side * scale)
        assert probs[image] is not None
    assert probs["b/broken.png"] is None


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_ensemble_and_flip_tta_average_every_members_and_views_map(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    source = images(tmp_path / "in")
    out = tmp_path / "p.csv"
    predict(
        {"checkpoint": [str(checkpoints["cnn"]), str(checkpoints["vit"])], "input": str(source / "b" / "face.jpg"),
         "output": str(out), "num_workers": 0, "tta": "flip", "explain": {"method": "hirescam"}}
    )  # fmt: skip
    saved = np.load(tmp_path / "p_explain" / "face.npy")
    # by hand: each member at its own size, each view (the mirrored one mirrored back), resized to the crop, averaged
    crop = decode_file(str(source / "b" / "face.jpg"), 48)[None]  # decoded once, at the largest input size
    maps = []
    for name, size in (("cnn", 32), ("vit", 48)):
        model = load_detector(checkpoints[name]).model
        x = torch.nn.functional.interpolate(crop.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
        plain = cam_maps(model, x, "hirescam", cam_target(model))[0]
        mirrored = cam_maps(model, x.flip(-1), "hirescam", cam_target(model))[0][:, ::-1]
        maps += [resize_map(plain, (48, 48)), resize_map(np.ascontiguousarray(mirrored), (48, 48))]
    np.testing.assert_allclose(saved, resize_map(np.mean(maps, axis=0), (40, 40)), atol=2e-3)


def test_an_unknown_layer_is_refused_before_anything_is_scored(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "p.csv"
    with pytest.raises(ConfigError, match=r"explain.layer=backbone.layer9 is not a layer of test_resnet"):
        predict(
            {"checkpoint": str(checkpoints["cnn"]), "input": str(images(tmp_path / "in")), "output": str(out),
             "explain": {"method": "gradcam", "layer": "backbone.layer9"}}
        )  # fmt: skip
    assert not out.exists() and not (tmp_path / "p_explain").exists()


@pytest.mark.cli
def test_cli_unknown_layer_is_one_error_line(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli(
        [str(ROOT / "predict.py"), f"checkpoint={checkpoints['cnn']}", f"input={images(tmp_path / 'in')}",
         f"output={tmp_path / 'p.csv'}", "explain=gradcam++", "explain.layer=backbone.nope"],
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "explain.layer=backbone.nope is not a layer of test_resnet" in errors[0]
    assert "Pass explain.layer=<module path> (this detector's default is backbone.layer4)" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_video_faces_are_explained_each_and_a_clip_models_on_its_frames(
    checkpoints: dict[str, Path], test_videos, tmp_path: Path
) -> None:
    """Three frames of the pan video: the CNN explains each scored face (the contact sheet then shows the
    overlays); a two-frame clip model explains the two faces its clip was made of, through its shared backbone."""
    video = test_videos.pan
    common = {"input": str(video), "num_workers": 0, "extraction": {"frames_per_video": 3, "faces": {"size": 96}},
              "explain": {"method": "gradcam"}}  # fmt: skip
    (row,) = predict({**common, "checkpoint": str(checkpoints["cnn"]), "output": str(tmp_path / "cnn.csv"),
                      "preview": True, "per_frame": True})  # fmt: skip
    assert row["status"] == "ok" and row["faces_found"] == 3
    with open(tmp_path / "cnn.frames.csv") as f:
        faces = [line.split(",")[1:3] for line in f.read().splitlines()[1:]]
    names = sorted(p.name for p in (tmp_path / "cnn_explain" / "pan").iterdir())
    assert names == sorted(f"{int(frame):06d}_{face}.{e}" for frame, face in faces for e in ("npy", "png"))
    for heat in (tmp_path / "cnn_explain" / "pan").glob("*.npy"):
        heat = np.load(heat)
        assert heat.dtype == np.float32 and heat.shape == (96, 96) and 0 <= heat.min() <= heat.max() <= 1
    assert (tmp_path / "cnn_preview" / "pan.png").is_file()

    torch.manual_seed(0)
    clip = save_checkpoint(tmp_path / "clip.pt", build_state(model=get_model("tiny", img_size=32, frames=2)))
    predict({**common, "checkpoint": str(clip), "output": str(tmp_path / "clip.csv")})
    explained = sorted(p.name for p in (tmp_path / "clip_explain" / "pan").glob("*.npy"))
    frames = sorted(int(frame) for frame, _ in faces)
    assert explained == [f"{frames[k]:06d}_0.npy" for k in (1, 2)]  # clip_positions(3, 2) == [1, 2]


def test_a_videos_contact_sheet_shows_the_explained_faces_overlays() -> None:
    """classify_video hands every scored face to the explainer, and the sheet's faces (most suspicious first)
    are the overlays it returns; a face it did not explain (a clip model's other frames) stays a crop."""
    crops = np.stack([np.full((8, 8, 3), k, np.uint8) for k in range(4)])
    keys = [(10 * k, 0) for k in range(4)]
    seen = {}

    def explain(path: str, faces: list, images: np.ndarray, probs: np.ndarray) -> dict[int, np.ndarray]:
        seen.update(path=path, faces=list(faces), count=len(images), probs=probs.tolist())
        return {i: np.full((20, 20, 3), 200 + i, np.uint8) for i in (1, 3)}  # two of the four explained

    def score(x: torch.Tensor) -> torch.Tensor:
        return x.float().mean((1, 2, 3)) / 10  # crop k scores k / 10

    result = classify_video(VideoResult("v.mp4"), keys, crops, score, Aggregation(), torch.device("cpu"),
                            explain=explain)  # fmt: skip
    assert seen == {"path": "v.mp4", "faces": keys, "count": 4, "probs": pytest.approx([0.0, 0.1, 0.2, 0.3])}
    shown = [(image.shape[0], int(image[0, 0, 0]), frame) for image, _, frame in result.top_faces]
    assert shown == [(20, 203, 30), (8, 2, 20), (20, 201, 10), (8, 0, 0)]
