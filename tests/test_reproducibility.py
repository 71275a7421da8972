"""One seed gives the same run: identical val metrics, whatever the number of loader workers."""

import json
from pathlib import Path

import pytest

from tests.conftest import FAST


def run_metrics(compose_cfg, base: Path, data_root: Path, *extra: str) -> dict:
    from train import train

    cfg = compose_cfg([*FAST, "data=folder", f"data.root={data_root}", f"base_path={base}", *extra])
    train(cfg)
    (run,) = [p for p in (base / "outputs").glob("*/*") if p.is_dir()]
    return json.loads((run / "metrics.json").read_text())["final"]


@pytest.mark.slow
def test_same_seed_same_metrics_with_0_and_2_workers(
    compose_cfg, folder_dataset: Path, tmp_path: Path
) -> None:
    keys = ("val/auc", "val/loss", "val/acc", "train/epoch_loss")
    runs = [
        # Threads fixed: by default the intra-op thread count follows the cores the workers leave, and a
        # different count sums floats in another order.
        run_metrics(
            compose_cfg,
            tmp_path / f"r{i}",
            folder_dataset,
            f"data.num_workers={w}",
            "seed=7",
            "hardware.num_threads=1",
        )
        for i, w in enumerate((0, 0, 2))
    ]
    for other in runs[1:]:
        assert {k: other[k] for k in keys} == {k: runs[0][k] for k in keys}
    different = run_metrics(compose_cfg, tmp_path / "r3", folder_dataset, "data.num_workers=0", "seed=8")
    assert different["train/epoch_loss"] != runs[0]["train/epoch_loss"]
