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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
