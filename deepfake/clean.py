"""Shim: `python -m deepfake.clean`, the command the README documents, runs `deepfake.runs.clean` as `__main__`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("deepfake.runs.clean", run_name="__main__", alter_sys=True)
