"""Decoded frames that cross from a decode process to the detecting one in shared memory, not pickled.

A frame pickled through a ProcessPoolExecutor is copied four times (the worker's array and its pickle, the
parent's bytes and its array): 32 RGB frames of an 8192 x 8192 video took 13 GB that way. Here a worker copies
each frame once into a named POSIX shared-memory block and sends the name; the parent maps the block and
unlinks the name at once, so the pages live exactly as long as the array over them, and nothing is left
behind if either process dies. Imports no torch (worker side).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

try:
    import _posixshmem  # what multiprocessing.shared_memory opens blocks with on POSIX
except ImportError:  # Windows: no forkserver decode processes there, so no shared frames either
    _posixshmem = None


@dataclass(frozen=True)
class SharedFrame:
    """A frame a decode process left in a named shared-memory block; only the name crosses processes."""

    name: str
    shape: tuple[int, ...]


def to_shared(image: np.ndarray) -> SharedFrame:
    """Copy `image` into a new shared-memory block (registered with the resource tracker until read)."""
    block = shared_memory.SharedMemory(create=True, size=max(1, image.nbytes))
    view = np.ndarray(image.shape, np.uint8, buffer=block.buf)
    view[...] = image
    del view
    block.close()  # the block outlives this mapping: `from_shared` maps it again and unlinks it
    return SharedFrame(block.name, image.shape)


def from_shared(frame: SharedFrame) -> np.ndarray:
    """Map the block and unlink its name at once: its pages live exactly as long as the returned array
    (numpy keeps the mmap alive), and nothing is left behind if this process dies."""
    assert _posixshmem is not None
    name = "/" + frame.name
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        block = mmap.mmap(fd, max(1, math.prod(frame.shape)))
    finally:
        os.close(fd)
    discard(frame)
    return np.ndarray(frame.shape, np.uint8, buffer=block)


def discard(frame: SharedFrame) -> None:
    """Remove a block's name (its pages go with the last mapping) and tell the resource tracker."""
    assert _posixshmem is not None
    name = "/" + frame.name
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink(name)
    resource_tracker.unregister(name, "shared_memory")
