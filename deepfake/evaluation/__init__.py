"""Scoring detectors: metrics, rebuilding a model from a checkpoint, flip TTA, ensembles, temperature
calibration, test-set scoring, per-image predictions, `predict.py` and `python -m deepfake.export`.

May import: `deepfake.system`, `deepfake.runs`, `deepfake.data`, `deepfake.model.detector`, `deepfake.reporting`, and
`deepfake.training.checkpoint`/`engine` (reading checkpoints, the shared `validate` loop). Never the runner.
"""
