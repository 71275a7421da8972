"""Serve a detector: `python serve.py checkpoint=<run dir | .pt>` opens a page at http://127.0.0.1:8000/ and an
HTTP API at /api/predict (the same as `deepfake-serve ...`; the command lives in deepfake/commands/serve.py)."""

from deepfake.commands.serve import run, serve

__all__ = ["serve"]

if __name__ == "__main__":
    run()
