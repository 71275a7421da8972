"""The training run: `runner.train` builds a `Trainer` that owns one run's state; the engine steps the
optimizer; the observers (TensorBoard, the
`logger` group's trackers, early stopping, checkpoints, progress, calibration, metrics file, backup)
react to its steps and epochs; the optimizer build (parameter groups, SAM, unfreezing), schedulers, checkpoints,
resume, out-of-memory help and the run directory serve it.

May import every room but `deepfake.sweeps`. Only the runner is the top: nothing in the package but
`deepfake.sweeps` imports `deepfake.training.runner`.
"""
