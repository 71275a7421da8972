"""`resume=` refuses another input size (`data.img_size`), as it refuses another architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfake.errors import ConfigError
from deepfake.training.runner import train
from tests.conftest import make_folder_dataset
from tests.runs import make_config, run_dir_of


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_resume_refuses_a_changed_input_size(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    once = {
        "training.num_epochs": 1,
        "training.ema.enabled": False,
        "training.checkpoint.every_n_steps": None,
    }
    train(make_config(tmp_path, data, **once))
    run = run_dir_of(tmp_path)
    last = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError) as excinfo:
        train(make_config(tmp_path, data, resume=str(run), **{**once, "data.img_size": 64}))
    message = str(excinfo.value)
    assert "data.img_size=64 but the checkpoint was trained on 32 px inputs" in message
    assert "Drop that override to continue the run" in message
    assert (run / "checkpoints" / "last.pt").read_bytes() == last  # nothing saved was touched
