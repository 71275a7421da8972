"""Videos to face crops: `python extract.py dataset=ffpp root=/data/FaceForensics++ out=/data/ffpp_faces` (the same
as `deepfake-extract ...`; the command lives in deepfake/commands/extract.py).

Imports nothing heavy: the decode workers' forkserver imports this module, and needs no torch.
"""

from deepfake.commands.extract import run

if __name__ == "__main__":
    run()
