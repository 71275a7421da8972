"""Scoring detectors, as numbers: metrics, faces -> frame -> video aggregation, rebuilding a model from a
checkpoint (`inference`), flip TTA, ensembles (the one scorer every prediction path calls), temperature
calibration, the validation threshold for a target FPR (`operating_point`), a test set's metrics (`scoring`),
per-image prediction CSVs, and `python -m deepfake.export`.

New scoring work (robustness grids, explanation grids) lands here as numbers; what draws or renders them is
`deepfake.reporting`, above.

May import: the ground floor, `deepfake.system`, `deepfake.runs`, `deepfake.data`, `deepfake.model`,
`deepfake.extraction` and `deepfake.explain`. Never reporting, training or prediction.
"""
