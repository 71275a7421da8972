"""The run directory and what lives in it: choosing it, atomic writes, the files training leaves, backups,
their mirror, `restore` and `clean`, and the allow-list for configs read back from files.

May import: `deepfake.errors`, `deepfake.cli`, `deepfake.config`, `deepfake.system`, and `deepfake.reporting`
for the figures drawn at the end of a run. Never `deepfake.training`, `deepfake.evaluation` or `deepfake.sweeps`.
"""
