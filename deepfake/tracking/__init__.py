"""Experiment trackers beside TensorBoard: a CSV table, MLflow and Weights & Biases (the `logger` group).

Each tracker gets the run's resolved config, its tags, the train scalars of every log step, the validation
metrics of every epoch and the run's files at the end. Every call from the training loop only queues: a
tracker's own thread (`sender.Sender`) sends in batches, retries while its server is away, and never makes
the loop wait. `trackers.open_trackers` builds the chosen ones; the Trainer holds them as one `Trackers`.

May import: the top level (`errors`), `deepfake.system` and `deepfake.runs` (file writes, git commit).
MLflow and W&B are imported only by their own modules, and only when chosen. Imported by `training` (the
runner and its observer) and by `reporting.plot` (curves from metrics.csv when there are no TensorBoard events).
"""
