"""The cheap start checks (`start`): config sanity, class balance and split leakage, run before any training
time is spent (`check_on_start=true`) and shown in full by the pre-flight (`training.preflight`, `check=true`).

May import: every room below it (in practice `deepfake.data` and the ground floor). Training imports it.
"""
