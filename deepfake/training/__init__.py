"""The training run: `runner.train` builds a `Trainer` that owns one run's state; the engine steps the
optimizer; the observers (TensorBoard, early stopping, checkpoints, progress, calibration, metrics file, backup,
and trackers such as MLflow or W&B) react to its steps and epochs; the optimizer build (parameter groups, SAM,
unfreezing), schedulers, the checkpoint files (`checkpointer`), resume, out-of-memory help, the run directory
and the recipes (`preflight` for check=true, `lr_finder`, `debug`) serve it.

May import: every room below it. Nothing in the package but `deepfake.sweeps` imports `training.runner`.
"""
