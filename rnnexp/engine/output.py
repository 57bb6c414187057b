"""The softmax output layer o = softmax(V s) with its cross-entropy, shared by every cell.

The layer dominates the cost at real vocabulary sizes, so it works in cache-sized row blocks: the
(rows × V) logits stay in cache through the exponential and both gradient products. Blocks go to
worker threads (NumPy's exp runs on one core) in a fixed pattern, so results repeat bitwise.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg.blas import get_blas_funcs

# Rows of the output layer processed at once: big enough for efficient matrix products, small
# enough that the (rows × V) block of logits stays in cache through softmax and both products.
OUTPUT_BLOCK_ROWS = 256
# Below this many logits a batch is too small to repay handing blocks to worker threads.
PARALLEL_MIN_LOGITS = 1 << 20


class SoftmaxOutput:
    """Cross-entropy of softmax(params[key] · s) for many rows at once; `params[key]` is (V, H)."""

    def __init__(self, params: dict[str, np.ndarray], key: str, threads: int):
        self.params, self.key, self.threads = params, key, threads
        weights = params[key]
        self.vocab_size, self.hidden_dim = weights.shape
        self.dtype = weights.dtype
        self._gemm = get_blas_funcs("gemm", dtype=self.dtype)
        self._executor: ThreadPoolExecutor | None = None

    def logits(self, s: np.ndarray) -> np.ndarray:
        """Unnormalised log-probabilities of the next word after state(s) s."""
        return s @ self.params[self.key].T

    def _safe_without_shift(self) -> bool:
        """True when no logit can overflow exp: |V s| <= max row-sum of |V| since |s| <= 1."""
        limit = 60.0 if self.dtype == np.float32 else 600.0
        return float(np.abs(self.params[self.key]).sum(axis=1).max()) < limit

    def __call__(self, S: np.ndarray, y: np.ndarray, weights: np.ndarray | None, need_grads: bool):
        """Softmax cross-entropy over all rows in cache-sized blocks, split among worker threads.

        Returns per-row NLL, and with `need_grads` dL/dS (N, H) and dL/dV, where each row's loss
        counts with its weight (0 for padding). NumPy's exp runs on one core, so each worker takes
        every `threads`-th block (BLAS is single-threaded in every pass); blocks go to workers in a fixed
        pattern and the workers' dV are summed in a fixed order, so results are bitwise repeatable.
        """
        N = S.shape[0]
        nll = np.empty(N, self.dtype)
        dS = np.empty((N, self.hidden_dim), self.dtype) if need_grads else None
        starts = list(range(0, N, OUTPUT_BLOCK_ROWS))
        # Bounding the logits through V reads all of V; with fewer rows than H, shifting each row
        # by its own maximum is the cheaper way to keep exp from overflowing.
        shift = N <= self.hidden_dim or not self._safe_without_shift()
        workers = min(self.threads, len(starts)) if N * self.vocab_size >= PARALLEL_MIN_LOGITS else 1

        def work(first: int):
            dV = None
            block = np.empty((min(N, OUTPUT_BLOCK_ROWS), self.vocab_size), self.dtype)
            for r0 in starts[first::workers]:
                r1 = min(N, r0 + OUTPUT_BLOCK_ROWS)
                dV = self._output_block(S, y, weights, r0, r1, block[: r1 - r0], shift, nll, dS, dV)
            return dV

        if workers == 1:
            return nll, dS, work(0)
        partial = list(self._pool().map(work, range(workers)))
        return nll, dS, (sum(partial[1:], partial[0]) if need_grads else None)

    def _output_block(self, S, y, weights, r0, r1, L, shift, nll, dS, dV):
        """Rows r0:r1: logits, softmax in place, NLL, and the two gradient products.

        Returns dV with this block's share added: the first block writes it, later blocks add to
        it inside the matrix product (BLAS gemm with beta=1) instead of through a V×H temporary.
        """
        Vm = self.params[self.key]
        Sb, yb, rows = S[r0:r1], y[r0:r1], np.arange(r1 - r0)
        np.matmul(Sb, Vm.T, out=L)
        if shift:
            L -= L.max(axis=1, keepdims=True)
        target_logit = L[rows, yb]
        np.exp(L, out=L)
        z = L.sum(axis=1)
        nll[r0:r1] = np.log(z) - target_logit
        if dS is None:
            return None
        wb = weights[r0:r1]
        L *= (wb / z)[:, None]
        L[rows, yb] -= wb
        np.matmul(L, Vm, out=dS[r0:r1])
        if dV is None:
            return L.T @ Sb
        # dV is C-ordered, so dVᵀ (H×V) is Fortran-ordered: dVᵀ += Sbᵀ·L updates it in place.
        self._gemm(1.0, Sb.T, L.T, beta=1.0, c=dV.T, trans_b=1, overwrite_c=1)
        return dV

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="rnnexp-output")
        return self._executor
