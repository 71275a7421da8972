"""What a person watches and reads: progress lines, the TensorBoard writer and its views, the ROC/PR and
confusion figures, and `python -m deepfake.plot`.

May import: `deepfake.errors`, `deepfake.cli`, `deepfake.config`, `deepfake.runs.fileio`, `deepfake.system`.
Never training, evaluation or sweeps code.
"""
