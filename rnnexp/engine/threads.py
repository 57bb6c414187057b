"""Thread settings of the engine: BLAS single-threaded inside a pass, worker threads for the output layer."""

from __future__ import annotations

import functools
import os

import scipy.linalg.blas  # noqa: F401  (loads scipy's own OpenBLAS before the controller lists the libraries)
from threadpoolctl import ThreadpoolController

# Both OpenBLAS copies, numpy's and scipy's: a limit that missed one would leave its threads
# spinning on the second core after every call.
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
