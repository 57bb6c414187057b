"""Gradients restricted to the embedding columns a batch used, and the norm that treats both kinds alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ColumnGrad:
    """The gradient of U restricted to the columns (words) a batch used; all other columns are 0."""

    cols: np.ndarray  # unique word ids, sorted
    rows: np.ndarray  # (len(cols), H): row i is the gradient of column cols[i] of U

    def toarray(self, vocab_size: int) -> np.ndarray:
        dense = np.zeros((self.rows.shape[1], vocab_size), dtype=self.rows.dtype)
        dense[:, self.cols] = self.rows.T
        return dense

    def sum_sq(self) -> float:
        return float(np.vdot(self.rows, self.rows))


def squared_norm(grad: np.ndarray | ColumnGrad) -> float:
    """The squared L2 norm of a gradient, dense or restricted to a batch's columns."""
    return grad.sum_sq() if isinstance(grad, ColumnGrad) else float(np.vdot(grad, grad))


def column_grad(ids: np.ndarray, rows: np.ndarray, real: np.ndarray) -> ColumnGrad:
    """Sum the gradient rows of each input word over the real positions: dU[:, w] = sum over t with x_t = w."""
    ids, rows = ids[real], rows[real]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return ColumnGrad(sorted_ids[starts], np.add.reduceat(rows[order], starts, axis=0))
