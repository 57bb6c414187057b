"""The softmax output layer o = softmax(V s) with its cross-entropy, shared by every cell.

The layer dominates the cost at real vocabulary sizes. Its rows go to worker threads in equal
blocks (NumPy's exp runs on one core, and each worker's BLAS calls are single-threaded), and each
block is one fused task over a (rows × V) buffer the worker keeps across calls:

    E = exp(S Vᵀ)           one GEMM, then exp in place
    [E V | z] = E [V | 1]    one GEMM gives both the product for dS and the row sums z
    E[r, y_r] -= z_r         the one-hot term, so that the next product includes it
    dV += Eᵀ (S · w/z)       one GEMM, the 1/z normalisation folded into the small (rows × H) factor

so the only pass over the logits besides the three products is the exponential. Blocks are fixed
by the row count, V and the thread count, and the workers' dV are summed in a fixed order, so
results repeat bitwise for a given thread count.

Every product goes through NumPy's matmul: scipy's BLAS (a second OpenBLAS) serialises calls from
concurrent threads, which made the dV product of two workers take twice as long as one.

Every output layer offers the same contract (the cells use nothing else): `params_of` (its
parameter names), `buffers` (non-trained arrays a checkpoint must keep), `logits(s)`, and
`nll_grads(S, y, weights, need_grads) -> (nll, dS, grads)` with `grads` a dict name -> gradient.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Logits of one block at most (16 MiB in float32): a worker whose rows fit does them as one block,
# so its dV comes from one product; beyond it, the block's dV is added to the worker's running sum.
OUTPUT_BLOCK_LOGITS = 1 << 22
# Below this many logits a batch is too small to repay handing blocks to worker threads.
PARALLEL_MIN_LOGITS = 1 << 20
AUGMENTED_MULTIPLE = 8


def block_rows_for(vocab_size: int) -> int:
    """Rows of logits one block holds at this vocabulary size."""
    return max(1, OUTPUT_BLOCK_LOGITS // vocab_size)


def block_plan(n_rows: int, workers: int, block_rows: int) -> list[list[tuple[int, int]]]:
    """Rows 0..n_rows in equal blocks of at most `block_rows`, the same number for each worker."""
    per_worker = max(1, math.ceil(n_rows / (workers * block_rows)))
    edges = [n_rows * i // (workers * per_worker) for i in range(workers * per_worker + 1)]
    blocks = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return [blocks[w * per_worker : (w + 1) * per_worker] for w in range(workers)]


class WorkerPool:
    """Worker threads, each with scratch buffers it keeps across calls (no page faults per step)."""

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

    def map(self, fn, n: int) -> list:
        """[fn(0), ..., fn(n-1)]: fn(0) in this thread, the others on worker threads meanwhile."""
        if n == 1:
            return [fn(0)]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="rnnexp-output")
        others = [self._executor.submit(fn, i) for i in range(1, n)]
        first = fn(0)
        return [first, *(f.result() for f in others)]


class SoftmaxOutput:
    """Cross-entropy of softmax(params[key] · s + params[key + "b"]) for many rows at once; `params[key]` is
    (V, H), and the bias (V,) exists only when the model has one (`model.output_bias`)."""

    def __init__(self, params: MutableMapping[str, np.ndarray], key: str, threads: int):
        self.params, self.key, self.threads = params, key, threads
        weights = params[key]
        self.vocab_size, self.hidden_dim = weights.shape
        self.dtype = weights.dtype
        self.bias_key = key + "b" if key + "b" in params else None
        self.params_of = (key,) if self.bias_key is None else (key, self.bias_key)
        self.buffers: dict[str, np.ndarray] = {}
        self._pool = WorkerPool(threads)
        # [V | 1 | 0…]: the ones column gives the row sums; zero columns pad the width to a multiple of
        # 8, which OpenBLAS's kernels multiply faster than the odd H + 1
        self._width = -(-(self.hidden_dim + 1) // AUGMENTED_MULTIPLE) * AUGMENTED_MULTIPLE
        self._augmented = np.zeros((self.vocab_size, self._width), self.dtype)
        self._augmented[:, self.hidden_dim] = 1

    def logits(self, s: np.ndarray) -> np.ndarray:
        """Unnormalised log-probabilities of the next word after state(s) s."""
        out = s @ self.params[self.key].T
        if self.bias_key is not None:
            out += self.params[self.bias_key]
        return out

    def __call__(self, S: np.ndarray, y: np.ndarray, weights: np.ndarray | None, need_grads: bool):
        """(nll, dS, dV): the form the cells were first written against; `nll_grads` is the contract."""
        nll, dS, grads = self.nll_grads(S, y, weights, need_grads)
        return nll, dS, None if grads is None else grads[self.key]

    def nll_grads(self, S: np.ndarray, y: np.ndarray, weights: np.ndarray | None, need_grads: bool):
        """Per-row NLL and, with `need_grads`, dL/dS (N, H) and {key: dL/dV}, each row counting with its weight.

        Weights are 0 for padding. Each worker takes a run of equal blocks (see `block_plan`), so
        the split is a function of the row count and the thread count alone.
        """
        N = S.shape[0]
        nll = np.empty(N, self.dtype)
        dS = np.empty((N, self.hidden_dim), self.dtype) if need_grads else None
        workers = min(self.threads, N) if N * self.vocab_size >= PARALLEL_MIN_LOGITS else 1
        plan = block_plan(N, workers, block_rows_for(self.vocab_size))
        rows = max(b - a for blocks in plan for a, b in blocks)
        if need_grads:
            np.copyto(self._augmented[:, : self.hidden_dim], self.params[self.key])

        def work(worker: int):
            L = self._pool.scratch(worker, "logits", (rows, self.vocab_size), self.dtype)
            grads = None
            # overflow is how an unsafe block shows (it is then redone shifted); NaN, how diverged weights do
            with np.errstate(over="ignore", invalid="ignore"):
                for r0, r1 in plan[worker]:
                    grads = self._block(S, y, weights, r0, r1, L[: r1 - r0], nll, dS, grads, worker)
            return grads

        partial = self._pool.map(work, workers)
        if not need_grads:
            return nll, None, None
        dV, db = partial[0]
        for other_dV, other_db in partial[1:]:
            dV += other_dV
            if db is not None:
                db += other_db
        return nll, dS, {self.key: dV} if db is None else {self.key: dV, self.bias_key: db}

    def _block(self, S, y, weights, r0, r1, L, nll, dS, grads, worker):
        """Rows r0:r1, fused: logits, exp in place, NLL, and both gradient products; returns (dV, db) with this
        block's share added (db None without a bias).

        exp runs on the logits unshifted, which is exact while no row overflows or underflows; a
        block whose row sums leave the safe range is done again with each row shifted by its max.
        """
        Vm = self.params[self.key]
        Sb, yb, n = S[r0:r1], y[r0:r1], r1 - r0
        index = np.arange(n)
        np.matmul(Sb, Vm.T, out=L)
        if self.bias_key is not None:
            L += self.params[self.bias_key]
        target = L[index, yb]
        np.exp(L, out=L)
        if dS is None:
            z = L.sum(axis=1)
            if not _safe(z, self.dtype):
                z = self._shifted(Sb, L, target)
            nll[r0:r1] = np.log(z) - target
            return None
        H = self.hidden_dim
        A = self._pool.scratch(worker, "products", (n, self._width), self.dtype)
        np.matmul(L, self._augmented, out=A)
        z = A[:, H]
        if not _safe(z, self.dtype):
            z = self._shifted(Sb, L, target)
            np.matmul(L, self._augmented, out=A)
        nll[r0:r1] = np.log(z) - target
        wb = weights[r0:r1]
        scale = wb / z
        # dS = (w/z)·(E V) - w·V[y]: the one-hot term from V's rows, not through the big block.
        np.multiply(A[:, :H], scale[:, None], out=dS[r0:r1])
        dS[r0:r1] -= wb[:, None] * Vm[yb]
        L[index, yb] -= z
        scaled = Sb * scale[:, None]
        block_db = None if self.bias_key is None else L.T @ scale  # dL/db: the rows of (E - z·onehot)·w/z summed
        if grads is None:
            return np.matmul(L.T, scaled), block_db
        dV, db = grads
        share = self._pool.scratch(worker, "dV", (self.vocab_size, H), self.dtype)
        dV += np.matmul(L.T, scaled, out=share)
        if db is not None:
            db += block_db
        return dV, db

    def _shifted(self, Sb: np.ndarray, L: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Redo a block's exp with each row shifted by its max (target shifted alike); returns the row sums."""
        np.matmul(Sb, self.params[self.key].T, out=L)
        if self.bias_key is not None:
            L += self.params[self.bias_key]
        top = L.max(axis=1)
        L -= top[:, None]
        target -= top
        np.exp(L, out=L)
        return L.sum(axis=1)


def _safe(z: np.ndarray, dtype: np.dtype) -> bool:
    """True when every row sum of unshifted exponentials is finite and far from underflow."""
    low = 1e-30 if dtype == np.float32 else 1e-280
    return bool(np.isfinite(z).all() and z.min() > low)
