"""Shim: `python -m deepfake.plot`, the command the README documents, runs `deepfake.reporting.plot` as `__main__`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("deepfake.reporting.plot", run_name="__main__", alter_sys=True)
