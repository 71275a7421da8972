"""The decode pool: videos decoded ahead in worker processes or threads, handed over in order.

extract.py (`deepfake.extraction.pipeline`) and predict.py (`deepfake.prediction.videos`) both read their
videos through it, so a video's kept frames are the same in training crops and at prediction.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

from deepfake.extraction.bounds import MAX_SIDE, TIMEOUT_S
from deepfake.extraction.video import Decoded, FrameReader, exit_with, timed_read

MAX_FRAMES_AHEAD = 1024  # decoded frames waiting for the detector, at most (about 6 GB of 1080p frames)


def decoded_videos(
    paths: Sequence[str],
    frames_per_video: int,
    workers: int,
    threads: bool = False,
    max_side: int = MAX_SIDE,
    timeout_s: float = TIMEOUT_S,
    reader: FrameReader | None = None,
) -> Iterator[tuple[Decoded, float]]:
    """Decoded videos in `paths` order; with workers > 0 up to 2 per worker are decoded ahead, and no more than
    MAX_FRAMES_AHEAD frames (each at most `max_side` on its longer side: 48 MB at 4096 x 4096). Workers are
    processes, or with `threads` threads of this process (no start-up: FFmpeg decodes without the GIL).
    Processes hand their frames over in shared memory, so a frame is never pickled or held twice. A `reader`
    (extract.py's robustness perturbation) reads each video in its worker instead of `read_frames`."""
    if workers == 0:
        for path in paths:
            yield timed_read(path, frames_per_video, max_side, timeout_s, reader=reader)
        return
    if threads:
        pool: Executor = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    else:
        # forkserver, not fork: the parent holds torch (and rich) threads, whose locks a fork would copy. Its
        # server imports the main module once and forks each worker from it, where spawn would import it per worker.
        ctx = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(workers, ctx, initializer=exit_with, initargs=(os.getpid(),))
    pending: deque[Future] = deque()
    try:
        with pool:
            try:
                yield from _in_order(
                    pool,
                    paths,
                    pending,
                    frames_per_video,
                    workers,
                    (max_side, timeout_s, not threads, reader),
                )
            finally:  # stopped early (an error, Ctrl-C): what has not started never will
                for future in pending:
                    future.cancel()
    finally:  # the pool has stopped: free the frames decoded ahead, which nobody will read
        for future in pending:
            if not future.cancelled() and future.exception() is None:
                future.result()[0].discard()


def _in_order(
    pool: Executor, paths: Sequence[str], pending: deque[Future], frames_per_video: int, workers: int,
    options: tuple[int, float, bool, FrameReader | None],
) -> Iterator[tuple[Decoded, float]]:  # fmt: skip
    queue = iter(paths)
    ahead = max(1, min(2 * workers, MAX_FRAMES_AHEAD // frames_per_video))
    for path in queue:
        pending.append(pool.submit(timed_read, path, frames_per_video, *options))
        if len(pending) >= ahead:
            break
    while pending:
        decoded, seconds = pending[0].result()
        pending.popleft()
        path = next(queue, None)
        if path is not None:
            pending.append(pool.submit(timed_read, path, frames_per_video, *options))
        yield decoded.unshared(), seconds
