"""deepfake: a Hydra-configured experiment runner for deepfake detectors on PyTorch and timm.

From your own script (the names load on first use, so `import deepfake` stays cheap):
```python
from deepfake import Config, train, evaluate, predict, extract, compose
config = Config(base_path="/tmp/proj")
config.data.kind, config.data.manifest = "manifest", "/data/ffpp_faces/manifest.csv"
best = train(config)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deepfake.version import __version__

if TYPE_CHECKING:
    from deepfake.commands.api import evaluate, extract, predict
    from deepfake.commands.conf import compose
    from deepfake.config import Config
    from deepfake.training.runner import train

__all__ = ["Config", "__version__", "compose", "evaluate", "extract", "predict", "train"]


def __getattr__(name: str) -> Any:
    """The API's names, imported when first asked for (PEP 562)."""
    if name == "Config":
        from deepfake.config import Config

        return Config
    if name == "train":
        from deepfake.training.runner import train

        return train
    if name == "compose":
        from deepfake.commands.conf import compose

        return compose
    if name in ("evaluate", "predict", "extract"):
        from deepfake.commands import api

        return getattr(api, name)
    raise AttributeError(f"module 'deepfake' has no attribute {name!r}")
