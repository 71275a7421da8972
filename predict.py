"""Is it fake? `python predict.py checkpoint=<run dir | .pt> input=<video | image | folder | list> output=preds.csv`
(the same as `deepfake-predict ...`; the command lives in deepfake/commands/predict.py)."""

from deepfake.commands.predict import predict, run

__all__ = ["predict"]

if __name__ == "__main__":
    run()
