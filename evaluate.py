"""Score a trained detector on test sets: `python evaluate.py checkpoint=<run dir | .pt> 'data.test_sets=[...]'`
(the same as `deepfake-evaluate ...`; the command lives in deepfake/commands/evaluate.py)."""

from deepfake.commands.evaluate import evaluate, run

__all__ = ["evaluate"]

if __name__ == "__main__":
    run()
