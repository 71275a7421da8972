"""What a person watches and reads: progress lines, the TensorBoard writer and its views, the ROC/PR,
reliability and confusion figures, and `python -m deepfake.plot`.

May import: the top level, `deepfake.system`, `deepfake.runs`, `deepfake.data` (image grids) and the pure
`deepfake.evaluation.metrics`/`predictions`/`calibration`. Never training, checks or sweeps code.
"""
