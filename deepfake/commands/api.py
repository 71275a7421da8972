"""The scripts as functions, for a user's own code: each takes the command line's `key=value` overrides.

```python
from deepfake import evaluate, predict
evaluate("checkpoint=outputs/2026-12-07/10-20-00-123456", "data.test_sets=[/data/celebdf_faces/manifest.csv]")
rows = predict("checkpoint=outputs/2026-12-07/10-20-00-123456", "input=clip.mp4", "output=preds.csv")
```
Training takes a `Config` (or `compose("train", [...])`, which applies config groups and `experiment=` presets):
see `deepfake.training.runner.train`. Errors are raised (`deepfake.errors.UserError` and friends), not printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deepfake.commands.conf import compose

if TYPE_CHECKING:
    from deepfake.prediction.driver import Predictions


def evaluate(*overrides: str) -> dict[str, dict]:
    """`python evaluate.py <overrides>`: each test set's metrics, by set name (also written under `eval/`)."""
    from deepfake.reporting.eval_sets import evaluate as evaluate_sets

    return evaluate_sets(compose("evaluate", overrides), list(overrides))


def predict(*overrides: str) -> Predictions:
    """`python predict.py <overrides>`: the rows written to `output`, one per input (path, prob, pred, status, ...),
    read back on demand (a sequence of dicts; `.summary` and `.plan` describe the run)."""
    from deepfake.prediction.driver import predict as predict_inputs

    return predict_inputs(compose("predict", overrides))


def extract(*overrides: str) -> Path | None:
    """`python extract.py <overrides>`: the manifest written (None while other shards are still running)."""
    from deepfake.extraction.pipeline import extract as extract_videos

    return extract_videos(compose("extract", overrides))
