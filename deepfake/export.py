"""Shim: `python -m deepfake.export`, the command the README documents, runs `deepfake.evaluation.export` as `__main__`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("deepfake.evaluation.export", run_name="__main__", alter_sys=True)
