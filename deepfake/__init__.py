"""deepfake: a Hydra-configured experiment runner for deepfake detectors on PyTorch and timm."""

__version__ = "0.1.0"
