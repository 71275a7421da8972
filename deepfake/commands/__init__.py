"""The entry points, the last room: `train`, `evaluate`, `predict`, `extract` (each a `@hydra.main` and the `run()`
that the repository's `train.py`... shims and the `deepfake-*` console scripts call, so both behave alike from
any directory), `conf` (where `conf/` is; `compose`) and `api` (the scripts as functions, behind
`from deepfake import train, evaluate, predict, extract`). May import: every room (nothing imports it).
"""
