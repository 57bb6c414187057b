"""The evaluation protocols: how a held-out split becomes one perplexity that means what the field means.

- `stateful` (stream data: chunk training, PTB stream mode): the split is one continuous stream,
  the hidden state carried through all of it, every token after the leading boundary token
  predicted exactly once: PyTorch word_language_model's and Mikolov's rnnlm's protocol.
- `sentence` (the tutorial's): each sentence is scored on its own, from a zero state.

`token_nll` returns the per-token scores in a fixed order (the stream's, or sentence by sentence),
so an n-gram baseline scored on the same tokens can be compared and interpolated token by token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnexp.data import Split
from rnnexp.errors import UserError
from rnnexp.training import batches


def _sentence_batches(model: Any, sentences: Sequence[np.ndarray], batch_size: int):
    """(rows, nll, mask) per padded batch; similar lengths batch together, so little is padding."""
    order = np.argsort([len(s) for s in sentences], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        x, y, mask = batches.pad([sentences[i] for i in rows])
        nll, _ = model.token_nll(x, y, mask)
        yield rows, nll, mask


def sentence_nll(model: Any, sentences: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """Every target's NLL, sentence by sentence in the given order, each sentence from a zero state."""
    sentences = batches.usable(sentences)
    if not sentences:
        raise UserError("the split has no sentence with two tokens or more: nothing to score.")
    scores: list[np.ndarray] = [np.empty(0)] * len(sentences)
    for rows, nll, mask in _sentence_batches(model, sentences, batch_size):
        for row, index in enumerate(rows):
            scores[index] = nll[row, : mask[row].sum()]
    return np.concatenate(scores)


def stateful_nll(model: Any, stream: np.ndarray, segment_length: int) -> np.ndarray:
    """Every token's NLL but the first, reading the stream once with the state carried throughout."""
    if len(stream) < 2:
        raise UserError(
            f"a stream of {len(stream)} token(s) has nothing to predict: stateful evaluation needs "
            "a split of two tokens or more; use more data or smaller split fractions."
        )
    x, y = stream[:-1], stream[1:]
    scores, state = [], None
    for start in range(0, len(x), segment_length):
        nll, state = model.token_nll(
            x[None, start : start + segment_length], y[None, start : start + segment_length], h0=state
        )
        scores.append(nll[0])
    return np.concatenate(scores)


def token_nll(model: Any, split: Split, protocol: str, batch_size: int = 256, segment_length: int = 4096) -> np.ndarray:
    """The split's per-token NLL under `protocol` (stateful or sentence)."""
    if protocol == "stateful":
        return stateful_nll(model, split.stream(), segment_length)
    if protocol == "sentence":
        return sentence_nll(model, split.sentences, batch_size)
    raise UserError(f"evaluation protocol must be stateful or sentence, got {protocol!r}.")


def mean_nll(model: Any, split: Split, protocol: str, batch_size: int = 256, segment_length: int = 4096) -> float:
    """Mean NLL per predicted token: the loss whose exponential is the logged perplexity."""
    if protocol == "sentence":
        return sentence_loss(model, split.sentences, batch_size)
    return float(token_nll(model, split, protocol, batch_size, segment_length).mean(dtype=np.float64))


def sentence_loss(model: Any, sentences: Sequence[np.ndarray], batch_size: int = 256) -> float:
    """Mean NLL per target of sentences scored each from a zero state (the tutorial's `calculate_loss`)."""
    total, count = 0.0, 0
    for _, nll, mask in _sentence_batches(model, batches.usable(sentences), batch_size):
        total += float(nll.sum())
        count += int(mask.sum())
    if not count:
        raise UserError("the split has no sentence with two tokens or more: nothing to score.")
    return total / count
