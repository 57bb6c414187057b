"""What every model checks of its inputs, and how it draws the next word: one copy for every cell."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnexp.errors import UserError


def as_batch(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise UserError(
            f"{name} must be a 1-D sequence of token ids or a 2-D (batch, time) array, got shape {arr.shape}."
        )
    return arr


def check_batch(x, y, mask, h0, vocab_size: int, state_size: int, dtype: np.dtype, state_hint: str = ""):
    """(x, y, mask, h0) as (B, T) arrays and a (B, state_size) state; a UserError names the first bad one.

    `state_hint` follows the expected shape in h0's message (e.g. "the lstm's whole state").
    """
    x = as_batch(x, "x")
    if x.size == 0:
        raise UserError("x is empty: every sequence needs at least one token.")
    if not np.issubdtype(x.dtype, np.integer):
        raise UserError(f"token ids must be integers, got dtype {x.dtype}.")
    arrays = [("x", x)]
    if y is not None:
        y = as_batch(y, "y")
        if y.shape != x.shape:
            raise UserError(f"x and y must have the same shape, got {x.shape} and {y.shape}.")
        if not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"token ids must be integers, got dtype {y.dtype}.")
        arrays.append(("y", y))
    for name, a in arrays:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise UserError(f"{name} holds token id {bad}, outside the vocabulary 0..{vocab_size - 1}.")
    if mask is not None:
        mask = as_batch(mask, "mask")
        if mask.shape != x.shape:
            raise UserError(f"mask must have the shape of x, got {mask.shape} and {x.shape}.")
        mask = mask.astype(bool)
        if not np.array_equal(mask, np.arange(x.shape[1]) < mask.sum(axis=1)[:, None]):
            raise UserError("mask must mark each sequence's real tokens as a prefix (padding only at the end).")
    if h0 is not None:
        h0 = np.asarray(h0, dtype=dtype)
        if h0.ndim == 1:
            h0 = h0[None, :]
        if h0.shape != (x.shape[0], state_size):
            hint = f" ({state_hint})" if state_hint else ""
            raise UserError(f"h0 must have shape {(x.shape[0], state_size)}{hint}, got {h0.shape}.")
    return x, y, mask, h0


def draw_word(
    logits: np.ndarray, rng: np.random.Generator, banned: Sequence[int], temperature: float, top_k: int | None
) -> int:
    """One word drawn from softmax(logits / temperature), never a banned one, among the top_k if given."""
    scaled = logits.astype(np.float64) / temperature
    scaled[list(banned)] = -np.inf
    if top_k is not None and top_k < len(scaled):
        scaled[np.argpartition(scaled, -top_k)[:-top_k]] = -np.inf
    p = np.exp(scaled - scaled.max())
    return int(rng.choice(len(scaled), p=p / p.sum()))
