"""The continuous cache (Grave, Joulin & Usunier, ICLR 2017) on top of the stateful protocol.

The split is read as the stateful protocol reads it: one stream, the state carried throughout,
every token after the first predicted once. At position t the top layer's state h_t (the one the
softmax sees) predicts the next word y_t. The cache holds the pairs (h_i, y_i) of the last `size`
positions before t, whose next words have all been read, and puts on word w

    p_cache(w | t) ∝ Σ_{t−size ≤ i < t, y_i = w} exp(θ h_tᵀ h_i),

mixed with the model as p = (1 − λ) p_model + λ p_cache. At the first position the cache is empty
and p = p_model. The mixture is worked in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexp.config.schema import CacheSettings
from rnnexp.errors import UserError

# Query positions per block: each block is one (BLOCK × (BLOCK + size)) matrix of scores.
BLOCK = 256


@dataclass
class StreamReading:
    """A stream read once: each target's NLL under the model, and the state that predicted it."""

    nll: np.ndarray  # (T,) in the model's dtype
    targets: np.ndarray  # (T,) the words predicted: the stream without its first token
    states: np.ndarray | None  # (T, H) the top layer's state at each prediction, when asked for


def stream_targets(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and targets of a stream, refused in one line when there is nothing to predict."""
    if len(stream) < 2:
        raise UserError(
            f"a stream of {len(stream)} token(s) has nothing to predict: the cache and dynamic evaluation "
            "need a split of two tokens or more."
        )
    return stream[:-1], stream[1:]


def read_stream(model: Any, stream: np.ndarray, segment_length: int) -> StreamReading:
    """The stateful protocol's per-token NLL (the same segments, the same calls), with the states behind it."""
    x, y = stream_targets(stream)
    scores, states, state = [], [], None
    for start in range(0, len(x), segment_length):
        xs, ys = x[None, start : start + segment_length], y[None, start : start + segment_length]
        states.append(model.hidden_states(xs, h0=state)[0])
        nll, state = model.token_nll(xs, ys, h0=state)
        scores.append(nll[0])
    return StreamReading(np.concatenate(scores), y, np.concatenate(states))


def cache_probabilities(
    states: np.ndarray, targets: np.ndarray, size: int, theta: float, candidates: np.ndarray | None = None
) -> np.ndarray:
    """p_cache of each position's target (T,), or of each of `candidates` (T, K), in float64.

    Position t looks only at the pairs (states[i], targets[i]) with t − size ≤ i < t; at t = 0 the
    cache is empty and every probability is 0.
    """
    return cache_probability_grid(states, targets, [size], [theta], candidates)[size, theta]


def cache_probability_grid(
    states: np.ndarray,
    targets: np.ndarray,
    sizes: Sequence[int],
    thetas: Sequence[float],
    candidates: np.ndarray | None = None,
) -> dict[tuple[int, float], np.ndarray]:
    """`cache_probabilities` for every (size, theta) pair, the states' dot products computed once per block."""
    T, longest = len(states), max(sizes)
    words = targets[:, None] if candidates is None else candidates
    grid = {(size, theta): np.zeros(words.shape, np.float64) for size in sizes for theta in thetas}
    for first in range(0, T, BLOCK):
        last = min(first + BLOCK, T)
        oldest = max(0, first - longest)
        dots = states[first:last].astype(np.float64) @ states[oldest:last].astype(np.float64).T
        matches = targets[oldest:last][None, None, :] == words[first:last, :, None]
        t = np.arange(first, last)[:, None]
        for size in sizes:
            skip = max(0, first - size) - oldest  # keys older than this size's window, for every row of the block
            i = np.arange(oldest + skip, last)[None, :]
            window = (i < t) & (i >= t - size)
            for theta in thetas:
                scores = np.where(window, theta * dots[:, skip:], -np.inf)
                top = scores.max(axis=1, keepdims=True)
                weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))  # 0 outside the window
                total = weights.sum(axis=1, keepdims=True)
                weights /= np.where(total > 0, total, 1.0)  # an empty cache (t = 0) keeps all-zero weights
                grid[size, theta][first:last] = (weights[:, None, :] * matches[:, :, skip:]).sum(axis=2)
    return grid if candidates is not None else {key: value[:, 0] for key, value in grid.items()}


def mixed_nll(model_nll: np.ndarray, cache_p: np.ndarray, lam: float) -> np.ndarray:
    """−log((1 − λ) p_model + λ p_cache) per position, in float64; the first position (empty cache) keeps the model's.

    Worked in log space, so that λ = 0 returns the model's NLL exactly (log 1 = 0, logaddexp(a, −∞) = a).
    """
    log_model = -model_nll.astype(np.float64)
    with np.errstate(divide="ignore"):  # log 0 = −∞: λ = 0 or 1, or a word absent from the cache
        keep, mix, log_cache = np.log1p(-lam), np.log(lam), np.log(cache_p)
    mixed = -np.logaddexp(keep + log_model, mix + log_cache)
    mixed[:1] = -log_model[:1]
    return mixed


def cache_nll(model: Any, stream: np.ndarray, settings: CacheSettings, segment_length: int) -> np.ndarray:
    """Every target's NLL under the model mixed with its continuous cache, in the stream's order."""
    reading = read_stream(model, stream, segment_length)
    return cached(reading, settings)


def cached(reading: StreamReading, settings: CacheSettings) -> np.ndarray:
    """A reading's NLL with the cache mixed in: the model's own states and targets make the cache."""
    if reading.states is None:
        raise ValueError("the cache needs the reading's states: read the stream with them.")
    cache_p = cache_probabilities(reading.states, reading.targets, settings.size, settings.theta)
    return mixed_nll(reading.nll, cache_p, settings.lam)
