"""Building a run's parts from its config: seeding and Hydra instantiation, shared by the Trainer and the
pre-flight check (which must build them the same way without importing the runner)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from deepfake.errors import UserError


def instantiate(config: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a UserError raised by the target surfaces as itself, not wrapped."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def build_model(cfg: Any, resuming: bool = False) -> Any:
    """The run's detector, built for the size the loaders feed when the model names none.

    A transformer fixes its patch grid when built, so a ViT made at its 224 px default would refuse the 64 px
    images of `data.img_size=64` (the synthetic default); CNNs take any size and only record it. A resumed
    run's weights come from its checkpoint, so it fetches no pretrained ones (offline resumes work).
    """
    size = cfg.model.img_size or cfg.data.img_size
    kwargs: dict[str, Any] = {"img_size": size} if size else {}
    if resuming:
        kwargs |= {"pretrained": False, "weights": None}
    return instantiate(cfg.model, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
