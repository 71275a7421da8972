"""Datasets, transforms and loaders; folder layouts become sample lists, images stay uint8."""

from deepfake.data.module import DataModule

__all__ = ["DataModule"]
