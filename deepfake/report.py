"""Shim: `python -m deepfake.report <run dir>` runs `deepfake.reporting.report` as `__main__`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("deepfake.reporting.report", run_name="__main__", alter_sys=True)
