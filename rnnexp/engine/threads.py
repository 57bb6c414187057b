"""Thread settings of the engine: BLAS single-threaded inside a pass, worker threads for the output layer."""

from __future__ import annotations

import functools
import os

from threadpoolctl import ThreadpoolController

_BLAS = ThreadpoolController()


def blas_single_threaded(method):
    """Run a pass with one BLAS thread: at these shapes (few rows, a long V or a small H) two
    OpenBLAS threads mostly wait on each other; the output layer's workers are the parallelism."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _BLAS.limit(limits=1, user_api="blas"):
            return method(*args, **kwargs)

    return wrapper


def default_threads() -> int:
    """Worker threads for the output layer: the BLAS thread count, capped by the usable cores."""
    blas = [lib["num_threads"] for lib in _BLAS.info() if lib["user_api"] == "blas"]
    return min(max(blas, default=1), len(os.sched_getaffinity(0)))
