"""Shim: `python -m deepfake.summarize`, the command the README documents, runs `deepfake.sweeps.summarize` as `__main__`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("deepfake.sweeps.summarize", run_name="__main__", alter_sys=True)
