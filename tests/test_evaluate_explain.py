"""Explanations of a test set: the manifest's mask column, the faithfulness score against each fake's own mask,
explain.png (file and TensorBoard) and the projector run with its t-SNE picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake.data.dataset import FaceDataset
from deepfake.data.manifest import read_manifest, write_manifest
from deepfake.data.samples import Sample
from deepfake.errors import ConfigError, DataError
from deepfake.evaluation.explanations import Explaining, grid_faces, set_faithfulness
from deepfake.reporting.explanations import write_embeddings, write_explain_grid
from tests.pages import parse
from tests.test_explain import SIZE, Member, RegionCnn, detector

pytestmark = pytest.mark.usefixtures("one_thread")

TOP_RIGHT = (slice(0, SIZE // 2), slice(SIZE // 2, SIZE))
BOTTOM_LEFT = (slice(SIZE // 2, SIZE), slice(0, SIZE // 2))


def mask_file(path: Path, region: tuple[slice, slice]) -> str:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[region] = 255
    Image.fromarray(mask).convert("RGB").save(path)  # FF++'s mask videos are RGB
    return str(path)


def faces_with_masks(root: Path) -> list[Sample]:
    """Four fakes (two masked at the top right, one at the bottom left, one without a mask) and two reals."""
    rng = np.random.default_rng(0)
    samples = []
    regions = [TOP_RIGHT, TOP_RIGHT, BOTTOM_LEFT, None, None, None]
    for k, region in enumerate(regions):
        path = root / f"{k}.png"
        Image.fromarray(rng.integers(40, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        mask = mask_file(root / f"{k}_mask.png", region) if region is not None else ""
        label = int(k < 4)
        samples.append(Sample(str(path), label, f"v{k}", "Deepfakes" if label else "real", "test", "", mask))
    return samples


def test_the_manifest_mask_column_round_trips_and_names_missing_files(tmp_path: Path) -> None:
    samples = faces_with_masks(tmp_path)
    manifest = write_manifest(samples, tmp_path / "m.csv")
    header, first = manifest.read_text().splitlines()[:2]
    assert header == "path,label,split,video,method,identity,mask" and first.endswith(",0_mask.png")
    assert read_manifest(manifest) == samples
    plain = write_manifest([Sample(s.path, s.label, s.video, s.method) for s in samples], tmp_path / "p.csv")
    assert (
        plain.read_text().splitlines()[0] == "path,label,split,video,method,identity"
    )  # no masks, no column
    Path(samples[2].mask).unlink()
    with pytest.raises(DataError, match=r"1 row\(s\) name missing mask files: line 4: .*2_mask.png"):
        read_manifest(manifest)


def explaining(method: str = "hirescam") -> Explaining:
    return Explaining([Member(detector(RegionCnn))], method, None, "none", torch.device("cpu"), batch_size=2)


def test_faithfulness_scores_each_fake_against_its_own_mask(tmp_path: Path) -> None:
    """The hand-built model reads the top-right quadrant only: its heat hits the two fakes masked there and
    misses the one masked at the bottom left; the fake without a mask and the reals are not counted."""
    samples = faces_with_masks(tmp_path)
    dataset = FaceDataset(samples, None, decode_size=SIZE)
    scores = set_faithfulness(explaining(), dataset, samples, SIZE, limit=10, seed=0)
    assert scores["faces"] == scores["fakes_with_mask"] == 3 and scores["method"] == "hirescam"
    assert scores["pointing_game"] == pytest.approx(2 / 3)
    assert scores["mask_area"] == pytest.approx(0.25)
    assert 0.5 < scores["heat_in_mask"] < 2 / 3  # two maps mostly inside, one outside entirely
    assert set_faithfulness(explaining(), dataset, samples, SIZE, limit=2, seed=0)["faces"] == 2  # a sample
    unmasked = [Sample(s.path, s.label, s.video, s.method) for s in samples]
    assert set_faithfulness(explaining(), dataset, unmasked, SIZE, limit=10, seed=0) is None


def test_grid_picks_the_most_confidently_wrong_and_right(tmp_path: Path) -> None:
    samples = faces_with_masks(tmp_path)
    dataset = FaceDataset(samples, None, decode_size=SIZE)
    probs = np.array([0.9, 0.2, 0.6, 0.05, 0.7, 0.08])  # fakes 0-3, reals 4-5
    wrong, right = grid_faces(explaining(), dataset, samples, probs, 0.5, count=2)
    assert [f.name for f in wrong] == ["v3", "v1"]  # fake at 0.05 (real by 0.95), then fake at 0.2
    assert [f.name for f in right] == ["v5", "v0"]  # real at 0.08 (0.92 sure), fake at 0.9
    assert [(f.prob, f.label) for f in wrong] == [(0.05, 1), (0.2, 1)]
    assert wrong[0].crop.shape == (SIZE, SIZE, 3) and wrong[0].heat.shape == (SIZE, SIZE)
    out = tmp_path / "eval" / "set"
    png = write_explain_grid(out, "set", explaining(), dataset, samples, probs, 0.5, 2)
    assert png == out / "explain.png" and Image.open(png).size[0] > 2 * 64
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    assert events.Tags()["images"] == ["explain"]


def test_embeddings_projector_run_and_tsne_picture(tmp_path: Path) -> None:
    samples = faces_with_masks(tmp_path)
    dataset = FaceDataset(samples, None, decode_size=SIZE)
    model = detector(RegionCnn)
    probs = np.linspace(0.1, 0.9, len(samples))
    out = tmp_path / "eval" / "set"
    folder = write_embeddings(out, "set", model, SIZE, dataset, samples, probs, 5, 0, torch.device("cpu"))
    assert folder == out / "embeddings" and (folder / "projector_config.pbtxt").is_file()
    (tensors,) = folder.glob("*/set/tensors.tsv")
    rows = tensors.read_text().splitlines()
    assert len(rows) == 5 and len(rows[0].split("\t")) == 8  # a seeded sample of 5, RegionCnn's 8 features
    metadata = (tensors.parent / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "label\tmethod\tvideo\tprob" and len(metadata) == 6
    assert Image.open(out / "embeddings.png").size[0] > 500


def masked_test_set(root: Path) -> Path:
    """A manifest of the training data's kind of faces (fakes carry a bright square, conftest.write_face) whose
    fakes' masks are exactly that square, and one fake without a mask."""
    from tests.conftest import write_face

    rng = np.random.default_rng(3)
    rows = []
    for k in range(8):
        label = k % 2
        path = root / f"{k}.png"
        write_face(path, label, rng)
        mask = ""
        if label and k != 7:
            square = np.zeros((32, 32), np.uint8)
            square[8:16, 8:16] = 255
            Image.fromarray(square).save(root / f"{k}_mask.png")
            mask = str(root / f"{k}_mask.png")
        rows.append(Sample(str(path), label, f"v{k}", "Deepfakes" if label else "real", "test", "", mask))
    return write_manifest(
        rows, root / "masked.csv"
    )  # the set is named by folder and stem: eval/masked_masked/


@pytest.mark.slow
def test_evaluate_explains_each_set_and_scores_it_against_the_manifest_masks(
    trained_run: dict, compose_cfg, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deepfake.reporting.eval_sets import evaluate, results_table

    manifest = masked_test_set(tmp_path / "masked")
    base = [f"checkpoint={trained_run['run']}", "data.num_workers=0", "eval.bootstrap_samples=0",
            f"data.test_sets=[{manifest}]", f"eval.out_dir={tmp_path / 'eval'}"]  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"model\.explain_layer=backbone\.nope is not a layer of test_resnet"
    ):
        bad = [*base, "eval.explain=gradcam", "model.explain_layer=backbone.nope"]
        evaluate(compose_cfg(bad, config_name="evaluate"), bad)
    assert not (tmp_path / "eval").exists()  # refused before any scoring
    # a 4 x 4 map at 32 px (the default, layer4, is 1 x 1 there)
    overrides = [*base, "eval.explain=hirescam", "model.explain_layer=backbone.layer2", "eval.explain_faces=3",
                 "eval.embeddings=true"]  # fmt: skip
    (report,) = evaluate(compose_cfg(overrides, config_name="evaluate"), overrides).values()
    out = tmp_path / "eval" / "masked_masked"
    scores = json.loads((out / "metrics.json").read_text())["faithfulness"]
    assert scores == report["faithfulness"]
    assert scores["faces"] == scores["fakes_with_mask"] == 3 and scores["method"] == "hirescam"
    assert scores["mask_area"] == pytest.approx(
        64 / 1024
    )  # the masks' own square, read at the crops' geometry
    assert 0 <= scores["pointing_game"] <= 1 and 0 <= scores["heat_in_mask"] <= 1
    table = results_table({"masked": report})
    assert "pointing game" in table and f"{scores['mask_area']:.4f}" in table.splitlines()[-1]
    assert Image.open(out / "explain.png").size[1] > 300
    events = EventAccumulator(str(out))
    events.Reload()
    assert events.Tags()["images"] == ["explain"]
    (tensors,) = (out / "embeddings").glob("*/masked_masked/tensors.tsv")
    assert len(tensors.read_text().splitlines()) == 8 and (out / "embeddings.png").is_file()
    # evaluate.py's report.html shows the grid, the t-SNE picture and the faithfulness scores (issue 29)
    page = parse((tmp_path / "eval" / "report.html").read_text(encoding="utf-8"))
    assert {"explanations: masked_masked", "embeddings: masked_masked"} <= {i["alt"] for i in page.images}
    faithful = dict(page.tables["faithfulness-1"])
    assert faithful["method, fakes with a mask"] == "hirescam, 3"
    assert faithful["heat in mask (share of the heat inside the mask)"] == f"{scores['heat_in_mask']:.4f}"


def test_a_clip_models_set_is_explained_frame_by_frame(tmp_path: Path) -> None:
    """Clips of 3 frames: the grid shows a clip's middle frame; the faithfulness counts each masked frame of a
    fake clip, against that frame's own mask."""
    from deepfake.data.clips import ClipDataset

    rng = np.random.default_rng(0)
    frames = []
    for video, label in (("fake", 1), ("real", 0)):
        for f in range(3):
            path = tmp_path / f"{video}_{f}.png"
            Image.fromarray(rng.integers(40, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
            region = (TOP_RIGHT if f < 2 else BOTTOM_LEFT) if label else None
            mask = mask_file(tmp_path / f"{video}_{f}_mask.png", region) if region else ""
            frames.append(Sample(str(path), label, video, "Deepfakes" if label else "real", "test", "", mask))
    dataset = ClipDataset(frames, 3, decode_size=SIZE)
    how = Explaining([Member(detector(RegionCnn, frames=3))], "hirescam", None, "none", torch.device("cpu"))
    scores = set_faithfulness(how, dataset, dataset.samples, SIZE, limit=10, seed=0)
    assert scores["fakes_with_mask"] == 1 and scores["faces"] == 3  # one fake clip, three masked frames
    assert scores["mask_area"] == pytest.approx(0.25)
    maps = how.maps(dataset[0][0])  # the model reads the top right only: frames 0 and 1 hit if they hold heat
    assert maps[:2].max() > 0
    assert scores["pointing_game"] == pytest.approx(sum(m.max() > 0 for m in maps[:2]) / 3)
    wrong, right = grid_faces(how, dataset, dataset.samples, np.array([0.2, 0.1]), 0.5, count=1)
    assert [f.name for f in wrong] == ["fake"] and [f.name for f in right] == ["real"]
    middle = np.asarray(Image.open(tmp_path / "fake_1.png"))
    assert np.array_equal(wrong[0].crop, middle) and wrong[0].heat.shape == (SIZE, SIZE)
