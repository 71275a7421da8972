"""Shim: `python -m deepfake.restore`, the command the README documents, runs `deepfake.runs.restore` as `__main__`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("deepfake.runs.restore", run_name="__main__", alter_sys=True)
