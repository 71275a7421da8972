"""Train a deepfake detector: `python train.py [overrides]` (the same as `deepfake-train [overrides]`).

`check=true` runs the pre-flight check instead, `find_lr=true` the LR range test; `torchrun --nproc_per_node=N
train.py [overrides]` trains with DistributedDataParallel. From Python: `from deepfake import Config, train`.
The command lives in deepfake/commands/train.py; this file only runs it.
"""

from deepfake.commands.train import run, train

__all__ = ["train"]

if __name__ == "__main__":
    run()
