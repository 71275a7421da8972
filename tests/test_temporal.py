"""The video-level temporal model: clip shapes on two backbone kinds, the clip sampler, shared augmentation,
exact resume, and a tiny train -> evaluate -> export round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake.data import DataModule
from deepfake.data.augment import FaceCrop, build_augment
from deepfake.data.clips import ClipDataset, clip_positions
from deepfake.data.dataset import sample_seed
from deepfake.data.samples import Sample
from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.export import export
from deepfake.evaluation.inference import load_detector
from deepfake.model.detector import get_model
from deepfake.model.temporal import clip_length
from deepfake.reporting.eval_sets import evaluate
from deepfake.system.interrupt import TrainingInterrupted
from deepfake.training.runner import train
from tests.conftest import make_folder_dataset
from tests.runs import make_config, run_dir_of
from tests.test_resume import assert_same, interrupt_at


@pytest.mark.parametrize(
    ("architecture", "size"),
    [("tiny", 32), pytest.param("vit_tiny_patch16_224", 32, marks=pytest.mark.slow)],  # ViT: 4 s to build
)
def test_clip_model_runs_the_frames_as_one_batch_and_gives_one_logit_per_clip(
    architecture: str, size: int
) -> None:
    torch.manual_seed(0)
    model = get_model(architecture, img_size=size, frames=4, temporal_layers=2).eval()
    seen: list[tuple[int, ...]] = []
    model.backbone.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    clips = torch.randint(0, 256, (2, 4, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        logits = model(clips)
        reversed_order = model(clips.flip(1))
    assert logits.shape == (2,) and logits.dtype == torch.float32
    assert seen[0] == (8, 3, size, size)  # B*T frames through the backbone at once
    assert not torch.allclose(logits, reversed_order)  # the positional embedding makes frame order count
    assert model.preprocess["frames"] == 4 and clip_length(model) == 4
    assert len(model.head.encoder.layers) == 2
    for wrong in (clips[:, :3], clips[0]):  # three frames; one clip without its batch axis
        with pytest.raises(ValueError, match=r"takes \(B, 4, 3, H, W\) clips"):
            model(wrong)


def test_a_per_image_model_is_unchanged_and_bad_temporal_settings_are_refused() -> None:
    plain = get_model("tiny", img_size=32)
    assert plain.frames == 1 and "frames" not in plain.preprocess and clip_length(plain) == 1
    assert plain(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2,)
    with pytest.raises(ConfigError, match="temporal_heads=3"):
        get_model("tiny", frames=4, temporal_heads=3)
    with pytest.raises(ConfigError, match=r"model\.frames must be in \[1, 1024\]"):
        get_model("tiny", frames=0)


def test_clip_positions_are_distinct_even_and_repeat_short_videos_in_order() -> None:
    assert clip_positions(8, 8) == list(range(8))
    assert clip_positions(16, 4) == [2, 6, 10, 14]  # segment middles
    assert clip_positions(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]  # fewer frames than T: repeated, in order
    for seed in range(20):
        jittered = clip_positions(13, 8, np.random.default_rng(seed))
        assert len(set(jittered)) == 8 and jittered == sorted(jittered)
        bounds = np.round(np.linspace(0, 13, 9)).astype(int)
        assert all(lo <= p < hi for p, lo, hi in zip(jittered, bounds[:-1], bounds[1:], strict=True))


def shifted_video(folder: Path, frames: int, shift: int, size: int = 64, label: int = 0) -> list[Sample]:
    """A video whose frame k is one random image rolled right by k*shift pixels (PNG: lossless)."""
    base = np.random.default_rng(label).integers(0, 256, (size, size, 3), dtype=np.uint8)
    folder.mkdir(parents=True)
    rows = []
    for k in range(frames):
        path = folder / f"{k:03d}.png"
        Image.fromarray(np.roll(base, k * shift, axis=1)).save(path)
        rows.append(Sample(str(path), label, folder.name, "m", "train"))
    return rows


def test_every_frame_of_a_clip_gets_the_same_crop_and_flip(tmp_path: Path) -> None:
    """Frames differ by a known shift, so with one crop and flip frame k is frame 0 moved by k*shift pixels
    (to the right unflipped, to the left flipped); crops of 32 px from 64 px images are not resampled."""
    shift = 2
    rows = shifted_video(tmp_path / "v", frames=6, shift=shift)
    crop = FaceCrop(32, scale=(0.25, 0.25), flip=True, ratio=(1.0, 1.0))
    ds = ClipDataset(rows, 4, crop, seed=3, decode_size=64, jitter=True)
    flips, firsts = set(), set()
    for epoch in range(12):
        clip, label, index = ds[(0, epoch)]
        assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.uint8 and (label, index) == (0, 0)
        rows_used = ds.positions(0, sample_seed(3, epoch, 0))
        assert len(set(rows_used)) == 4  # four distinct frames of the video
        ref = clip[0]
        right = all(
            torch.equal(clip[j][..., d:], ref[..., :-d])
            for j in range(1, 4)
            if (d := (rows_used[j] - rows_used[0]) * shift)
        )
        left = all(
            torch.equal(clip[j][..., :-d], ref[..., d:])
            for j in range(1, 4)
            if (d := (rows_used[j] - rows_used[0]) * shift)
        )
        assert right != left  # exactly one consistent direction: one flip for the whole clip
        flips.add(left)
        firsts.add(ref.float().mean().item())
    assert flips == {True, False} and len(firsts) > 6  # flips and crops do vary between epochs


def test_colour_jitter_is_shared_by_the_frames_of_a_clip(tmp_path: Path) -> None:
    rows = shifted_video(tmp_path / "still", frames=4, shift=0)  # four identical frames
    jitter = build_augment(64, {"crop": False, "hflip": True, "color_jitter": {"enabled": True, "p": 1.0}})
    ds = ClipDataset(rows, 4, jitter, seed=0, decode_size=64)
    clips = [ds[(0, epoch)][0] for epoch in range(3)]
    for clip in clips:
        assert all(torch.equal(frame, clip[0]) for frame in clip)
    assert not torch.equal(clips[0], clips[1])  # yet each epoch draws anew


def test_the_data_module_yields_one_clip_per_video(folder_dataset: Path) -> None:
    dm = DataModule(kind="folder", root=str(folder_dataset), img_size=32, num_workers=0, batch_size=8,
                    clip_frames=2)  # fmt: skip
    dm.setup()
    assert dm.train_dataloader().batch_size == 4  # batch_size counts frames: 8 frames = 4 clips of 2
    loader = dm.eval_dataloader("val")
    clips, labels, _ = next(iter(loader))
    assert labels.shape == (8,) and clips.shape == (8, 2, 3, 32, 32) and clips.dtype == torch.uint8
    assert len(loader.dataset) == 8 and loader.dataset.videos[0] == "real/val_r000"
    assert sorted(loader.dataset.labels.tolist()) == [0] * 4 + [1] * 4
    assert dm.setup_test_sets() == ["test"] and len(dm.test_samples["test"]) == 8
    with pytest.raises(ConfigError, match=r"data\.fake_synthesis=sbi"):
        DataModule(kind="folder", root=str(folder_dataset), fake_synthesis="sbi", clip_frames=2)


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 videos per class and split, 3 frames each: 24 training clips, as the resume tests' 24 images."""
    return make_folder_dataset(tmp_path_factory.mktemp("clips") / "data", videos=12, frames=3)


#: 8 frames per micro-batch = 4 clips of 2: 6 micro-batches, 3 optimizer steps per epoch (accumulation 2)
CLIP = {"model.frames": 2, "training.batch_size": 8, "training.eval_batch_size": 16}


@pytest.mark.slow
def test_clip_model_resumes_bit_identical(
    monkeypatch: pytest.MonkeyPatch, clip_data: Path, tmp_path: Path
) -> None:
    train(make_config(tmp_path / "reference", clip_data, **CLIP))
    reference = run_dir_of(tmp_path / "reference")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 4)  # mid-epoch 2
        with pytest.raises(TrainingInterrupted, match="Resume with"):
            train(make_config(tmp_path / "cut", clip_data, **CLIP))
    run = run_dir_of(tmp_path / "cut")
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert (saved["global_step"], saved["batch_in_epoch"]) == (4, 2)  # mid-epoch 2, clips 4-7 consumed
    train(make_config(tmp_path / "cut", clip_data, resume=str(run), **CLIP))
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    expected = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "monitor"):
        assert_same(resumed[key], expected[key], key)
    assert resumed["train_state"]["num_train_samples"] == 24  # clips, not frames
    assert any(k.startswith("head.encoder.") for k in resumed["model"])


@pytest.mark.slow
def test_clip_model_trains_evaluates_and_exports(clip_data: Path, tmp_path: Path, compose_cfg) -> None:
    train(make_config(tmp_path, clip_data, **CLIP, **{"training.ema.enabled": False}))
    run = run_dir_of(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())["final"]
    assert metrics["val/auc"] == metrics["val/video_auc"]  # one clip per video: the AUC is the video AUC
    with (run / "val_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and len({r["video"] for r in rows}) == 24

    overrides = [
        f"checkpoint={run}",
        "data.num_workers=0",
        "eval.bootstrap_samples=0",
        f"eval.out_dir={tmp_path}",
    ]
    test = evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)["test"]
    assert test["counts"]["images"] == test["counts"]["videos"] == 24  # one prediction per test video
    with (tmp_path / "test" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len({r["video"] for r in rows}) == 24 and all(r["path"].endswith("0000.jpg") for r in rows)

    exported = export(run, "safetensors", tmp_path / "model.safetensors")
    loaded = load_detector(exported)
    original = load_detector(run)
    assert loaded.model.frames == 2 and loaded.checkpoint["preprocess"]["frames"] == 2
    clip = torch.randint(0, 256, (3, 2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded.model(clip), original.model(clip))


@pytest.mark.parametrize("frames", ["8", 0, 2.5])
def test_a_checkpoint_with_a_bad_frame_count_is_refused(tmp_path: Path, frames: object) -> None:
    model = get_model("tiny", img_size=32, frames=2)
    preprocess = {**model.preprocess, "frames": frames}
    path = tmp_path / "bad.pt"
    torch.save({"model": model.state_dict(), "architecture": "test_resnet", "preprocess": preprocess}, path)
    with pytest.raises(UserError, match=r"frames \(clip models, 1 to 1024\)"):
        load_detector(path)
    torch.save(
        {"model": model.state_dict(), "architecture": "test_resnet", "preprocess": model.preprocess}, path
    )
    assert load_detector(path).model.frames == 2  # the checkpoint alone says it is a clip model


def test_a_clip_model_starts_from_a_trained_detectors_backbone(tmp_path: Path) -> None:
    """`model.weights` may be a per-image detector (fine-tune it on clips) or a clip model: backbone only."""
    for source in (get_model("tiny", img_size=32), get_model("tiny", img_size=32, frames=3)):
        path = tmp_path / "source.pt"
        torch.save({"model": source.state_dict(), "architecture": "test_resnet"}, path)
        clip = get_model("tiny", img_size=32, frames=2, weights=str(path))
        assert_same(clip.backbone.state_dict(), source.backbone.state_dict())


@torch.no_grad()
def test_a_clip_model_composes_with_input_streams_and_refuses_a_mask_head() -> None:
    """Streams fuse per frame inside the backbone, so a clip model takes them; blend masks are per image."""
    clips = torch.randint(
        0, 256, (3, 2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    for fusion in ("early", "late"):
        torch.manual_seed(0)
        model = get_model("tiny", img_size=32, frames=2, streams=["rgb", "srm", "dct"], fusion=fusion).eval()
        assert model(clips).shape == (3,)
        assert not torch.equal(model(clips), model(clips.flip(1)))  # the head still sees frame order
    with pytest.raises(
        ConfigError, match=r"^model.mask_head=true cannot go with a clip model \(model.frames=2\)"
    ):
        get_model("tiny", img_size=32, frames=2, mask_head=True)
