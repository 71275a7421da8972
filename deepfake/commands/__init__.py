"""The entry points: `train.py`, `evaluate.py`, `predict.py`, `extract.py` (thin shims at the repository root) and
the console scripts `deepfake-train`, `deepfake-evaluate`, `deepfake-predict`, `deepfake-extract` run the same
`@hydra.main` functions here, so both behave alike from any directory. `conf` finds the config tree; `api` is the
Python face (`from deepfake import train, evaluate, predict, extract`). This room sits above every other.
"""
