"""TensorBoard: what a finished run shows, read back from the event file and from a real tensorboard server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.reporting.tensorboard_views import (
    CAPTION,
    GAP,
    TILE,
    TITLE,
    confidently_wrong,
    flatten_config,
    tile_image,
)

ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, body: dict | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as r:
        return json.loads(r.read())


def wait_for(url: str, ready: Any, proc: subprocess.Popen, timeout: float = 120.0) -> Any:
    """Poll `url` until `ready(answer)` holds, the server dies, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tensorboard exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            answer = fetch(url)
            if ready(answer):
                return answer
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not serve {url} within {timeout:.0f}s; last answer: {answer}")


@pytest.mark.slow
@pytest.mark.cli
def test_tensorboard_server_serves_scalars_and_hparams(trained_run: dict) -> None:
    run = trained_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run), "--host", "127.0.0.1",
           "--port", str(port), "--load_fast", "false", "--reload_interval", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        tags = wait_for(f"{base}/scalars/tags", lambda a: "val/auc" in a.get(".", {}), proc)["."]
        assert {"train/loss", "train/lr", "val/loss", "val/auc", "val/auc_best", "best/auc"} <= set(tags)

        experiment = fetch(f"{base}/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"training.learning_rate", "model.architecture", "data.root", "seed"} <= hparams
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {"val/auc", "val/loss", "best/auc"}

        groups = fetch(
            f"{base}/hparams/session_groups",
            {"experimentName": "", "allowedStatuses": ALL_STATUSES, "startIndex": 0, "sliceSize": 10},
        )["sessionGroups"]
        assert len(groups) == 1  # one run, not a run plus an hparams sub-run
        group = groups[0]
        assert group["hparams"]["model.architecture"] == "tiny"
        assert group["hparams"]["training.learning_rate"] == pytest.approx(2e-3)
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert values["val/auc"] == pytest.approx(metrics["final"]["val/auc"], abs=1e-6)
        assert values["best/auc"] == pytest.approx(metrics["best"]["metrics"]["val/auc"], abs=1e-6)
        assert values["best/loss"] == pytest.approx(metrics["best"]["metrics"]["val/loss"], abs=1e-6)

        layout = fetch(f"{base}/custom_scalars/layout")
        chart = layout["category"][0]["chart"][0]
        assert chart["title"] == "train vs val loss"
        assert set(chart["multiline"]["tag"]) >= {"train/loss", "val/loss"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


@pytest.mark.slow
def test_event_file_holds_curves_figures_images_and_config(trained_run: dict) -> None:
    run = trained_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    epochs = metrics["epochs_completed"]
    assert len(events.Tensors("val/pr_curve")) == epochs  # one PR curve per validation
    for tag in ("val/roc", "val/confusion_matrix"):
        figures = events.Images(tag)
        assert len(figures) == epochs and figures[-1].width >= 300
    augmented = events.Images("train/augmented")
    assert len(augmented) == 1 and augmented[0].step == 0
    # 16 captioned tiles (tensorboard_views.tile_image): 8 columns and 2 rows of square tiles under the title
    assert (augmented[0].width, augmented[0].height) == (
        8 * (TILE + GAP) + GAP,
        TITLE + 2 * (TILE + CAPTION + GAP) + GAP,
    )
    wrong = metrics["final"]["val/acc"] < 1.0
    assert ("val/confidently_wrong" in tags["images"]) == wrong
    assert "config/text_summary" in tags["tensors"]


def test_confidently_wrong_orders_mistakes_by_confidence() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1])
    probs = np.array([0.9, 0.2, 0.1, 0.45, 0.6, 0.99])
    # Mistakes: item 0 (real at .9), 1 (fake at .2), 3 (fake at .45), 4 (real at .6).
    assert confidently_wrong(labels, probs, 0.5, 3).tolist() == [0, 1, 4]
    assert confidently_wrong(labels, probs, 0.5, 10).tolist() == [0, 1, 4, 3]


def test_flatten_config_gives_hparams_scalars(compose_cfg) -> None:
    flat = flatten_config(compose_cfg(["data.test_sets=[/a,/b]"]))
    assert flat["training.learning_rate"] == pytest.approx(2e-3) and flat["model.architecture"] == "tiny"
    assert flat["data.test_sets"] == "['/a', '/b']" and flat["model.weights"] == "null"
    assert not any(key.endswith("_target_") for key in flat)
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


def test_tile_image_captions_each_tile_under_a_title() -> None:
    images = torch.zeros(3, 3, 32, 64, dtype=torch.uint8)  # a clip's frames side by side: twice as wide
    images[1] = 255
    grid = tile_image(images, ["real · p 0.10", "fake · p 0.90", "fake"], "title", ncols=2)
    tw = 2 * TILE
    assert (
        grid.shape == (TITLE + 2 * (TILE + CAPTION + GAP) + GAP, 2 * (tw + GAP) + GAP, 3)
        and grid.dtype == np.uint8
    )
    second = grid[TITLE : TITLE + TILE, 2 * GAP + tw : 2 * GAP + 2 * tw]
    assert (second == 255).all()  # the white image, upscaled without blending, in the second column
    caption = grid[TITLE + TILE : TITLE + TILE + CAPTION, GAP : GAP + tw]
    title = grid[:TITLE]
    assert (caption < 128).any() and (title < 128).any()  # text drawn in both bands
