"""Checks before training time is spent: the cheap start checks (structure, leakage, config sanity) and
the `check=true` pre-flight, which builds the model and data and times a step without writing a run.

May import: `deepfake.data`, `deepfake.model.detector`, `deepfake.system`, `deepfake.runs`, and the training engine's
`LoopConfig` and step. Never the runner.
"""
