"""Where `conf/` is, for the entry points and for Python callers, wherever the package is installed.

A source checkout and an editable install (`pip install -e .`) read the repository's top-level `conf/`; a wheel
carries a copy as `deepfake/conf` (setup.py's build step). Hydra gets the folder as an absolute path, so a
command run from any directory composes the same config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

_PACKAGE = Path(__file__).resolve().parents[1]


def conf_dir() -> Path:
    """The config tree: the installed copy inside the package, else the checkout's beside it."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(
        f"no conf/ folder with train.yaml beside or inside {_PACKAGE}: the installation is incomplete; "
        "reinstall with pip install -e . from the repository"
    )


def compose(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python <name>.py <overrides>` would run with (name: train, evaluate, predict or extract).

    For Python callers: `train(compose("train", ["experiment=sbi_effb4", "data=manifest", ...]))` applies the
    config groups and presets that a `Config()` dataclass alone does not.
    """
    from deepfake.config import register_configs
    from deepfake.extraction.config import register_extract_config

    register_configs()
    register_extract_config()
    folder = conf_dir() / "extract" if name == "extract" else conf_dir()
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=list(overrides))
