"""The engine's threads: BLAS single-threaded inside a pass, and one pool of worker threads per model.

The pool splits work by shapes and the thread count alone, so results repeat bitwise for a given
thread count.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import scipy.linalg.blas  # noqa: F401  (loads scipy's own OpenBLAS before the controller lists the libraries)
from threadpoolctl import ThreadpoolController

# Both OpenBLAS copies, numpy's and scipy's: a limit that missed one would leave its threads
# spinning on the second core after every call.
_BLAS = ThreadpoolController()
Result = TypeVar("Result")


def blas_single_threaded(method):
    """Run a pass with one BLAS thread: at these shapes (few rows, a long V or a small H) two
    OpenBLAS threads mostly wait on each other; the pool's workers are the parallelism."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _BLAS.limit(limits=1, user_api="blas"):
            return method(*args, **kwargs)

    return wrapper


def default_threads() -> int:
    """Worker threads of a model: the BLAS thread count, capped by the usable cores."""
    blas = [lib["num_threads"] for lib in _BLAS.info() if lib["user_api"] == "blas"]
    return min(max(blas, default=1), len(os.sched_getaffinity(0)))


class WorkerPool:
    """`threads` workers (the calling thread is the first), each with scratch buffers it keeps across
    calls, so that a step does not page-fault fresh memory."""

    MIN_ROWS = 64  # fewer rows per thread do not repay the hand-over

    def __init__(self, threads: int):
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._scratch: dict[tuple[int, str], np.ndarray] = {}

    def scratch(self, worker: int, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """A (rows, cols) C-ordered buffer of this worker's, reused while it is large enough."""
        buf = self._scratch.get((worker, name))
        if buf is None or buf.dtype != dtype or buf.shape[1] != shape[1] or buf.shape[0] < shape[0]:
            buf = self._scratch[(worker, name)] = np.empty(shape, dtype)
        return buf[: shape[0]]

    def map(self, fn: Callable[[int], Result], n: int) -> list[Result]:
        """[fn(0), ..., fn(n-1)]: fn(0) in this thread, the others on worker threads meanwhile."""
        if n == 1:
            return [fn(0)]
        others = [self._workers().submit(fn, i) for i in range(1, n)]
        first = fn(0)
        return [first, *(f.result() for f in others)]

    def run(self, tasks: list[Callable[[], None]]) -> None:
        """Tasks dealt round-robin to the threads (the first share in this thread); returns when all are done."""
        shares = [tasks[w :: self.threads] for w in range(min(self.threads, len(tasks)))]
        if len(shares) <= 1:
            _run_all(tasks)
            return
        futures = [self._workers().submit(_run_all, share) for share in shares[1:]]
        _run_all(shares[0])
        for future in futures:
            future.result()

    def row_blocks(self, n: int) -> list[tuple[int, int]]:
        """Rows 0..n in one contiguous block per thread, none under `MIN_ROWS` rows (at least one block)."""
        parts = max(1, min(self.threads, n // self.MIN_ROWS))
        return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]

    def matmul(self, A: np.ndarray, B: np.ndarray, out: np.ndarray, bias: np.ndarray | None = None) -> None:
        """out = A @ B (+ bias), rows split among the threads."""

        def block(r0: int, r1: int) -> Callable[[], None]:
            def task() -> None:
                np.matmul(A[r0:r1], B, out=out[r0:r1])
                if bias is not None:
                    out[r0:r1] += bias

            return task

        self.run([block(r0, r1) for r0, r1 in self.row_blocks(A.shape[0])])

    def _workers(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="rnnexp-worker")
        return self._executor


def _run_all(tasks: list[Callable[[], None]]) -> None:
    for task in tasks:
        task()
