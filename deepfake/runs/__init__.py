"""Run directories and checkpoint files from outside a training process: atomic writes (`fileio`), reading
and writing one checkpoint (`checkpoint`: `load_checkpoint`, `save_checkpoint`, `unwrap`, `build_state`),
backups and their mirror, `restore` (rebuild a run dir from a backup), `clean`, and the allow-list
(`safe_config`) every config read back from a file passes.

May import: the ground floor and `deepfake.system`. What a training run writes into its directory, and which
checkpoint files it keeps, is training's (`training.run_files`, `training.checkpointer`).
"""
