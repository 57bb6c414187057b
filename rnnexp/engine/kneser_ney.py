"""Interpolated Kneser–Ney n-gram baseline (Chen & Goodman 1999), plain or modified, in vectorised NumPy.

Why hand-written: nltk.lm's KneserNeyInterpolated walks Python dictionaries recursively for every
probability, tens of milliseconds per n-gram, about an hour for one PTB-size split. Here every n-gram of
order k gets a dense integer id whose sort key is (dense id of its (k-1)-token prefix) * V + last token.
Prefix ids are smaller than the number of training tokens, so keys stay far below 2**63 for any V and any
order, without hashing. Counting is np.unique over those keys, scoring looks test n-grams up with
np.searchsorted, one vectorised pass per order and none per token.

Conventions, each chosen so that every id in 0..V-1 always has a non-zero probability summing to 1:

- The highest order uses raw counts. A lower order uses continuation counts: the number of distinct
  tokens seen just before the n-gram, plus one per occurrence at the very start of a sequence. Such an
  occurrence has no left neighbour and its context is the whole history, so it counts as a raw count,
  as KenLM does for n-grams that begin with <s>. Without that, sentences like [<eos>, w, ...] would
  give every "<eos> w" bigram a continuation count of 0 and the first word would back off to unigrams.
- Discounts are estimated per order from the counts of counts of the counts that order discounts. With
  Y = n1 / (n1 + 2 n2) (0.5 if n1 = n2 = 0), plain KN uses D = Y; modified KN uses D1 = 1 - 2Y n2/n1,
  D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3, each falling back to the plain D when its denominator is 0.
  Every discount for count class k is then clamped into [0.01, k - 0.01], so a seen n-gram keeps some
  mass of its own and every context leaves some to the lower order.
- A context never seen at an order backs off entirely to the lower order (gamma = 1); the unigram
  distribution interpolates with the uniform 1/V.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnexp.errors import UserError

MAX_ORDER = 5
DISCOUNT_MARGIN = 0.01  # keeps the discount of count class k inside (0, k)
UNESTIMABLE_DISCOUNT = 0.5  # Y when an order has no n-gram seen once or twice


Sequences = list[np.ndarray] | np.ndarray


@dataclass(frozen=True)
class _OrderTable:
    """One order's n-grams, sorted by key, with what interpolation needs per n-gram and per context.

    `discounted_counts[g]` is max(c - D(c), 0) for n-gram g; the arrays indexed by context are indexed by
    the dense id of the (k-1)-gram (a single entry, id 0, for the empty context of the unigrams).
    """

    keys: np.ndarray
    discounted_counts: np.ndarray
    context_totals: np.ndarray
    context_lower_weights: np.ndarray

    def lookup(self, context_ids: np.ndarray, words: np.ndarray, vocab_size: int) -> np.ndarray:
        """Dense ids of the n-grams (context, word); -1 where the context is unknown or the n-gram unseen."""
        ids = np.full(len(words), -1, dtype=np.int64)
        known = np.flatnonzero(context_ids >= 0)
        if len(known) == 0 or len(self.keys) == 0:
            return ids
        keys = context_ids[known] * vocab_size + words[known]
        slots = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[slots] == keys
        ids[known[found]] = slots[found]
        return ids

    def interpolate(self, context_ids: np.ndarray, gram_ids: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """P_k = max(c - D, 0) / total + gamma * P_lower in contexts seen at this order, P_lower elsewhere."""
        safe_contexts = np.maximum(context_ids, 0)
        totals = np.where(context_ids >= 0, self.context_totals[safe_contexts], 0.0)
        seen = totals > 0
        own = np.where(gram_ids >= 0, self.discounted_counts[np.maximum(gram_ids, 0)], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mixed = own / totals + self.context_lower_weights[safe_contexts] * lower
        return np.where(seen, mixed, lower)


class KneserNey:
    """An interpolated Kneser–Ney language model over ids 0..vocab_size-1, the n-gram baseline for the RNNs."""

    def __init__(self, order: int, vocab_size: int, modified: bool, tables: list[_OrderTable]) -> None:
        self.order = order
        self.vocab_size = vocab_size
        self.modified = modified
        self._tables = tables

    @classmethod
    def fit(cls, sequences: Sequences, order: int, vocab_size: int, modified: bool = True) -> KneserNey:
        """Count the n-grams of `sequences` (a 1-D stream, or a list of sentences n-grams never cross)."""
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
            raise UserError(f"The KN order must be between 1 and {MAX_ORDER}; got {order!r}, pick one in that range.")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise UserError(f"The KN vocab_size must be a positive integer; got {vocab_size!r}.")
        tokens, positions = _flatten(sequences, int(vocab_size))
        if len(tokens) == 0:
            raise UserError("The KN training sequences hold no tokens; pass at least one non-empty sequence.")
        window_ids, first_positions, key_tables = _count_windows(tokens, positions, order, int(vocab_size))
        tables = []
        for k in range(1, order + 1):
            if k == order:
                counts = np.bincount(window_ids[k][positions >= k - 1], minlength=len(key_tables[k]))
            else:
                left_extension_suffixes = window_ids[k][first_positions[k + 1]]
                sequence_starts = window_ids[k][positions == k - 1]
                counts = np.bincount(left_extension_suffixes, minlength=len(key_tables[k])) + np.bincount(
                    sequence_starts, minlength=len(key_tables[k])
                )
            n_contexts = 1 if k == 1 else len(key_tables[k - 1])
            tables.append(_order_table(key_tables[k], counts, n_contexts, int(vocab_size), modified))
        return cls(order, int(vocab_size), modified, tables)

    def token_nll(self, sequences: Sequences) -> np.ndarray:
        """NLL (nats) of every token but each sequence's first, the same targets an RNN is scored on."""
        tokens, positions = _flatten(sequences, self.vocab_size)
        window_ids = self._window_ids(tokens, positions)
        targets = np.flatnonzero(positions >= 1)
        contexts = [np.zeros(len(targets), dtype=np.int64)] + [window_ids[k][targets - 1] for k in range(1, self.order)]
        grams = [window_ids[k][targets] for k in range(1, self.order + 1)]
        return -np.log(self._probabilities(contexts, grams))

    def distribution(self, context: tuple[int, ...]) -> np.ndarray:
        """P(next word | context) over the whole vocabulary, from the last order-1 tokens of `context`."""
        history, positions = _flatten(np.asarray(context, dtype=np.int64).reshape(-1), self.vocab_size)
        words = np.arange(self.vocab_size, dtype=np.int64)
        history_window_ids = self._window_ids(history, positions)
        contexts, grams = [], []
        for k, table in enumerate(self._tables, start=1):
            if k == 1:
                context_id = 0
            elif len(history) >= k - 1:
                context_id = history_window_ids[k - 1][-1]
            else:
                context_id = -1
            context_ids = np.full(self.vocab_size, context_id, dtype=np.int64)
            contexts.append(context_ids)
            grams.append(table.lookup(context_ids, words, self.vocab_size))
        return self._probabilities(contexts, grams)

    def _window_ids(self, tokens: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
        """For k = 0..order, the dense id of the k-gram ending at each position; -1 if too short or unseen."""
        window_ids = [np.zeros(len(tokens), dtype=np.int64)]
        for k, table in enumerate(self._tables, start=1):
            prefixes = np.full(len(tokens), -1, dtype=np.int64)
            if k == 1:
                prefixes[:] = 0
            else:
                prefixes[1:] = window_ids[k - 1][:-1]
                prefixes[positions < k - 1] = -1
            window_ids.append(table.lookup(prefixes, tokens, self.vocab_size))
        return window_ids

    def _probabilities(self, contexts: list[np.ndarray], grams: list[np.ndarray]) -> np.ndarray:
        """The KN recursion from the uniform distribution up, one vectorised step per order."""
        probabilities = np.full(len(grams[0]), 1.0 / self.vocab_size)
        for table, context_ids, gram_ids in zip(self._tables, contexts, grams, strict=True):
            probabilities = table.interpolate(context_ids, gram_ids, probabilities)
        return probabilities


def tune_interpolation(model_nll: np.ndarray, baseline_nll: np.ndarray) -> float:
    """The λ in [0, 1] whose mix λ·P_model + (1-λ)·P_baseline has the lowest mean NLL on these tokens.

    Tune it on validation tokens, then report the test mix with that λ. The bounded search never evaluates
    the ends, so both ends are compared too: a model better on every token gets exactly λ = 1.
    """
    from scipy.optimize import minimize_scalar  # here, not at import: the CLI starts without it

    model_nll, baseline_nll = _paired(model_nll, baseline_nll)

    def mean_nll(lam: float) -> float:
        return float(interpolated_nll(model_nll, baseline_nll, lam).mean())

    interior = float(minimize_scalar(mean_nll, bounds=(0.0, 1.0), method="bounded").x)
    return min((0.0, interior, 1.0), key=mean_nll)


def interpolated_nll(model_nll: np.ndarray, baseline_nll: np.ndarray, lam: float) -> np.ndarray:
    """Per-token NLL of λ·P_model + (1-λ)·P_baseline, computed in log space so tiny probabilities survive."""
    model_nll, baseline_nll = _paired(model_nll, baseline_nll)
    if not 0.0 <= lam <= 1.0:
        raise UserError(f"The interpolation weight must lie in [0, 1]; got {lam!r}.")
    with np.errstate(divide="ignore"):
        return -np.logaddexp(np.log(lam) - model_nll, np.log1p(-lam) - baseline_nll)


def _paired(model_nll: np.ndarray, baseline_nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both NLL arrays as float64, checked to score the same non-empty run of tokens."""
    model_nll = np.asarray(model_nll, dtype=np.float64)
    baseline_nll = np.asarray(baseline_nll, dtype=np.float64)
    if model_nll.shape != baseline_nll.shape or model_nll.size == 0:
        raise UserError(
            f"Interpolation needs two equally long, non-empty per-token NLL arrays; got shapes "
            f"{model_nll.shape} and {baseline_nll.shape}, score the same tokens with both models."
        )
    return model_nll, baseline_nll


def _flatten(sequences: Sequences, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All tokens concatenated as int64, and each token's position inside its own sequence."""
    pieces = [sequences] if isinstance(sequences, np.ndarray) else list(sequences)
    arrays = [np.asarray(piece) for piece in pieces]
    for array in arrays:
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise UserError(
                f"KN sequences must be 1-D integer id arrays (or a list of them); got shape {array.shape} "
                f"of {array.dtype}."
            )
    lengths = np.array([len(array) for array in arrays], dtype=np.int64)
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    tokens = np.concatenate(arrays).astype(np.int64)
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise UserError(
            f"KN token ids must lie in 0..{vocab_size - 1}; got ids from {tokens.min()} to {tokens.max()}, "
            f"encode the text with the same vocabulary the model was fitted with."
        )
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(len(tokens), dtype=np.int64) - np.repeat(starts, lengths)
    return tokens, positions


def _count_windows(
    tokens: np.ndarray, positions: np.ndarray, order: int, vocab_size: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """For k = 0..order: dense window ids per position, one position of each distinct k-gram, sorted keys."""
    window_ids = [np.zeros(len(tokens), dtype=np.int64)]
    first_positions = [np.zeros(1, dtype=np.int64)]
    key_tables = [np.zeros(1, dtype=np.int64)]
    for k in range(1, order + 1):
        ends = np.flatnonzero(positions >= k - 1)
        prefixes = window_ids[k - 1][ends - 1] if k > 1 else np.zeros(len(ends), dtype=np.int64)
        window_keys = prefixes * vocab_size + tokens[ends]
        keys, first_index, inverse = np.unique(window_keys, return_index=True, return_inverse=True)
        ids = np.full(len(tokens), -1, dtype=np.int64)
        ids[ends] = inverse.reshape(-1)
        window_ids.append(ids)
        first_positions.append(ends[first_index])
        key_tables.append(keys)
    return window_ids, first_positions, key_tables


def _order_table(keys: np.ndarray, counts: np.ndarray, n_contexts: int, vocab_size: int, modified: bool) -> _OrderTable:
    """Discount one order's counts and sum them per context: totals and the mass left to the lower order."""
    discounts = _discounts(counts, modified)[np.minimum(counts, 3)]
    context_ids = keys // vocab_size
    totals = np.bincount(context_ids, weights=counts, minlength=n_contexts)
    discount_mass = np.bincount(context_ids, weights=discounts, minlength=n_contexts)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower_weights = np.where(totals > 0, discount_mass / totals, 1.0)
    return _OrderTable(keys, counts - discounts, totals.astype(np.float64), lower_weights)


def _discounts(counts: np.ndarray, modified: bool) -> np.ndarray:
    """[0, D1, D2, D3+] from the counts of counts n1..n4 (see the module docstring for the fallbacks)."""
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == c)) for c in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else UNESTIMABLE_DISCOUNT
    plain = min(max(y, DISCOUNT_MARGIN), 1 - DISCOUNT_MARGIN)
    if not modified:
        return np.array([0.0, plain, plain, plain])
    estimates = (
        (1 - 2 * y * n2 / n1) if n1 else plain,
        (2 - 3 * y * n3 / n2) if n2 else plain,
        (3 - 4 * y * n4 / n3) if n3 else plain,
    )
    clamped = [min(max(d, DISCOUNT_MARGIN), k - DISCOUNT_MARGIN) for k, d in enumerate(estimates, start=1)]
    return np.array([0.0, *clamped])
