"""The training run: `runner.train` builds a `Trainer` that owns one run's state; the engine steps the
optimizer; schedulers, checkpoints, resume, interrupts, out-of-memory help and early stopping serve it.

May import every room below it (system, runs, data, models, reporting, evaluation, checks). Only the runner
is the top: nothing else in the package imports `deepfake.training.runner`.
"""
