"""Hydra multirun: one job's failure handling, the sweep summary callback, `python -m deepfake.summarize`,
and one GPU per parallel job.

May import: every room below it (it wraps whole runs); nothing imports it but train.py.
"""
