"""Pictures that label themselves (issue 24, item 6): each figure's titles, legends, texts and bar labels are
read back from matplotlib's Figure and Axes objects, never from the PNG's pixels."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from deepfake.prediction.preview import preview_figure
from deepfake.prediction.videos import VideoResult
from deepfake.reporting import plot, tensorboard_views
from deepfake.reporting.figures import curve_title, pr_figure, reliability_figure, roc_figure
from deepfake.reporting.tensorboard_views import log_run_start, log_val_epoch
from deepfake.sweeps.summarize import JobRow, SweepSummary, figure
from deepfake.training.lr_finder import Sweep, lr_figure
from tests.test_plot import fake_run


def texts(fig: Figure) -> list[str]:
    """Every piece of text on the figure: titles, axis labels, legend entries, texts, bar labels."""
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


def legend_entries(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def scores(n_real: int = 300, n_fake: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    return labels, np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)


def test_reliability_says_fake_and_shows_the_count_of_each_bin() -> None:
    labels, probs = scores()
    calibrated = np.clip(probs * 0.8 + 0.1, 0, 1)
    fig = reliability_figure(
        labels, {"raw": probs, "calibrated": calibrated}, curve_title("Reliability", "celebdf", labels)
    )
    curve_ax, counts_ax = fig.axes
    words = " ".join(texts(fig))
    assert "Positive class" not in words and "fraction of fakes" in words and "probability of fake" in words
    assert curve_ax.get_title() == "Reliability: celebdf\n500 images (300 real, 200 fake)"
    edges = np.linspace(0, 1, 16)
    for container, probs_ in zip(counts_ax.containers, (probs, calibrated), strict=True):
        expected = np.histogram(probs_, edges)[
            0
        ]  # the same 15 bins (np.histogram closes the last on the right)
        assert [bar.get_height() for bar in container] == expected.tolist()
    shown = [t.get_text() for t in counts_ax.texts]
    assert shown == [str(c) if c else "" for p in (probs, calibrated) for c in np.histogram(p, edges)[0]]


def test_roc_and_pr_carry_the_set_name_counts_chance_and_operating_points() -> None:
    labels, probs = scores(n_real=1000)
    v_labels, v_probs = labels[::5], probs[::5]
    title = curve_title("ROC", "Celeb-DF v2", labels, videos=240)
    roc = roc_figure(
        (labels, probs),
        (v_labels, v_probs),
        title,
        (0.1, 0.01, 0.001),
        {"threshold": 0.61, "fpr": 0.012, "tpr": 0.5},
    )
    ax = roc.axes[0]
    assert ax.get_title() == "ROC: Celeb-DF v2\n1200 images (1000 real, 200 fake), 240 videos"
    entries = legend_entries(ax)
    assert any(e.startswith("Chance level") for e in entries)
    assert (
        sum(e.startswith("TPR ") and "at FPR <= " in e for e in entries) == 3
    )  # 1000 reals: 0.001 measurable
    assert any(e.startswith("validation threshold 0.610: FPR 0.012, TPR 0.500") for e in entries)
    pr = pr_figure((labels, probs), None, curve_title("Precision-recall", "Celeb-DF v2", labels))
    assert pr.axes[0].get_title().startswith("Precision-recall: Celeb-DF v2\n1200 images")
    assert any(e.startswith("Chance level") for e in legend_entries(pr.axes[0]))


def test_roc_marks_only_the_fprs_its_reals_can_measure() -> None:
    labels, probs = scores(n_real=150)
    entries = legend_entries(roc_figure((labels, probs), None, "ROC", (0.1, 0.01, 0.001)).axes[0])
    assert [e.split(" at ")[1] for e in entries if e.startswith("TPR ")] == ["FPR <= 0.1", "FPR <= 0.01"]


def capture_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Figure.savefig records each figure under its file name, then writes as usual."""
    saved: dict[str, Figure] = {}
    original = Figure.savefig

    def record(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        saved[Path(str(fname)).name] = self
        original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def test_run_plots_keep_legends_off_the_curves_and_name_the_mask_term(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """val_metrics.png's legend sits beside the axes; a mask-head run's loss plot says its loss has a mask term
    (read from the checkpoint's config); the validation ROC carries its counts and the chance line."""
    run = tmp_path / "run"
    fake_run(run)
    metrics = json.loads((run / "metrics.json").read_text())
    point = {"target_fpr": 0.01, "fpr": 0.0, "tpr": 0.45, "threshold": 0.83, "logit": 1.6}
    (run / "metrics.json").write_text(json.dumps({**metrics, "operating_point": point}))
    config = {"model": {"mask_head": True}, "training": {"mask_loss": "dice", "mask_loss_weight": 0.5}}
    (run / "checkpoints").mkdir()
    torch.save({"config": yaml.safe_dump(config)}, run / "checkpoints" / "last.pt")
    saved = capture_figures(monkeypatch)
    plot.plot_run(run)
    val = saved["val_metrics.png"]
    renderer = FigureCanvasAgg(val).get_renderer()
    val.draw(renderer)
    axes_box, legend_box = (
        val.axes[0].get_window_extent(renderer),
        val.axes[0].get_legend().get_window_extent(renderer),
    )
    assert legend_box.x0 >= axes_box.x1  # entirely to the right of the plotting area
    loss_ax = saved["loss.png"].axes[0]
    assert "includes the mask term" in loss_ax.get_title() and "0.5 x mask dice loss" in loss_ax.get_ylabel()
    roc_ax = saved["roc.png"].axes[0]
    assert roc_ax.get_title().endswith("validation\n40 images (20 real, 20 fake), 10 videos")
    assert "chance (AUC 0.5)" in legend_entries(roc_ax)
    assert "threshold for FPR <= 0.01: FPR 0.000, TPR 0.450" in legend_entries(
        roc_ax
    )  # best.pt's operating point


def test_a_plain_run_has_a_plain_loss_plot() -> None:
    assert plot.loss_labels({"model": {"mask_head": False}}) == ("loss", "binary cross-entropy")


def test_preview_title_gives_verdict_threshold_and_checkpoint_and_marks_frames_without_a_face() -> None:
    crop = np.zeros((16, 16, 3), np.uint8)
    result = VideoResult(
        "/videos/clip.mp4", prob=0.8125, frames_seen=[0, 10, 20, 30, 40],
        frame_probs=[(0, 0.7), (20, 0.9), (40, 0.85)], top_faces=[(crop, 0.9, 20), (crop, 0.85, 40)],
    )  # fmt: skip
    fig = preview_figure(result, 0.6, "run7/best.pt")
    assert fig.get_suptitle() == "clip.mp4: FAKE: p(fake) 0.812 >= threshold 0.600 · checkpoint run7/best.pt"
    strip = fig.axes[-1]
    missing = next(line for line in strip.lines if line.get_label().startswith("no face"))
    assert missing.get_label() == "no face (2 of 5 frames)" and list(missing.get_xdata()) == [10, 30]
    nothing = preview_figure(
        VideoResult("/v/empty.mp4", status="no_face", frames_seen=[0, 5]), 0.5, "best.pt"
    )
    assert nothing.get_suptitle() == "empty.mp4: no face found · checkpoint best.pt"


def test_sweep_bars_start_near_the_values_and_carry_them(tmp_path: Path) -> None:
    rows = [
        JobRow(job=str(i), path=tmp_path / str(i), overrides=[f"lr={lr}"], status="completed", monitor="val/auc",
               best=best, final={"val/auc": best - 0.002})
        for i, (lr, best) in enumerate([(1e-3, 0.9712), (3e-3, 0.9801), (1e-2, 0.9655)])
    ]  # fmt: skip
    rows.append(JobRow(job="3", path=tmp_path / "3", overrides=["lr=1"], status="failed"))
    fig = figure(SweepSummary(tmp_path, rows, "val/auc", "max", ["lr"]))
    ax = fig.axes[0]
    assert 0.9 < ax.get_xlim()[0] < 0.9655  # not from 0: differences of 0.01 stay visible
    assert [t.get_text() for t in ax.texts] == [
        "0.9712",
        "0.9801",
        "0.9655",
        " failed",
    ]  # bar labels, then status


class Recorder:
    """A TensorBoard logger stand-in that keeps what it is given."""

    writer = True

    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.images: dict[str, np.ndarray] = {}

    def figure(self, tag: str, fig: Figure, step: int) -> None:
        self.figures[tag] = fig

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.images[tag] = image

    def __getattr__(self, name: str) -> Any:  # text, hparams, pr_curve, ...: not what this test reads
        return lambda *args, **kwargs: None


def test_tensorboard_grids_caption_each_tile_with_label_and_probability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grids: dict[str, list[str]] = {}
    drawn = tensorboard_views.tile_image

    def spy(images: torch.Tensor, captions: list[str], title: str) -> np.ndarray:
        grids[title] = list(captions)
        return drawn(images, captions, title)

    monkeypatch.setattr(tensorboard_views, "tile_image", spy)
    images = torch.randint(0, 255, (5, 3, 8, 8), dtype=torch.uint8)
    paths = [SimpleNamespace(path=f"/d/{i}.png") for i in range(5)]
    dataset = SimpleNamespace(
        preview=lambda i, epoch: images[i], labels=np.array([0, 1, 1, 0, 1]), samples=paths
    )
    loader = SimpleNamespace(
        sampler=SimpleNamespace(order=lambda: np.array([3, 1, 4]), epoch=0), dataset=dataset
    )
    cfg = OmegaConf.create(
        {"logging": {"num_images": 3, "images_every_n_epochs": 1}, "eval": {"threshold": 0.5}}
    )
    tb = Recorder()
    log_run_start(tb, cfg, "", loader, lambda x: np.full(len(x), 0.47))
    assert tb.images["train/augmented"].shape[-1] == 3
    assert grids.popitem()[1] == ["real · p 0.47", "fake · p 0.47", "fake · p 0.47"]

    class Items(list):
        samples = dataset.samples

    val = Items((images[i], int(dataset.labels[i]), i) for i in range(5))
    labels, probs = dataset.labels, np.array([0.9, 0.2, 0.6, 0.05, 0.45])  # wrong: 0, 1, 4
    log_val_epoch(tb, 10, 0, labels, probs, np.arange(5), val, cfg)
    assert tb.images["val/confidently_wrong"].shape[-1] == 3
    assert grids.popitem()[1] == [
        "real · p 0.90",
        "fake · p 0.20",
        "fake · p 0.45",
    ]  # most confident mistake first


def test_lr_find_says_when_the_curve_is_too_flat() -> None:
    lrs = list(np.geomspace(1e-6, 1, 60))
    flat = Sweep(None)
    steep = Sweep(None)
    for k, lr in enumerate(lrs):
        flat.add(lr, 0.693 - 0.0002 * k)
        steep.add(lr, 0.7 * np.exp(-k / 15) + 0.05)
    fig = lr_figure(flat, 30, None, 1e-3)
    assert fig.axes[0].get_title() == "LR range test: curve too flat, suggestion unreliable"
    assert any("too flat for a reliable suggestion" in t for t in texts(fig))
    assert lr_figure(steep, 30, None, 1e-3).axes[0].get_title() == "LR range test"
