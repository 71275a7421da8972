"""Run directories from outside a training process: atomic writes, backups and their mirror, `restore`,
`clean`, and the allow-list (`safe_config`) every config read back from a file passes.

May import: the top level (`errors`, `cli`, `config`) and `deepfake.system`. Never training, evaluation,
reporting or sweeps code: what a training run writes into its directory is `deepfake.training.run_files`.
"""
