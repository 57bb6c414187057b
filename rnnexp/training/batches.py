"""Token sequences cut into the (batch, time) arrays the model trains on.

Sentence batches (window and full truncation): whole sentences, padded at the end, with a mask;
x = s[:-1], y = s[1:]. Stream chunks (chunk truncation): the split's stream as B parallel rows,
read `length` steps at a time, the hidden state carried from one chunk to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rnnexp.errors import UserError


def pad(sentences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, mask), each (B, T) with T the longest sentence's number of targets."""
    lengths = np.array([len(s) - 1 for s in sentences])
    x = np.zeros((len(sentences), lengths.max()), np.int64)
    y = np.zeros_like(x)
    for row, sentence in enumerate(sentences):
        x[row, : len(sentence) - 1] = sentence[:-1]
        y[row, : len(sentence) - 1] = sentence[1:]
    return x, y, np.arange(x.shape[1]) < lengths[:, None]


def usable(sentences: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Sentences with at least one target."""
    return [s for s in sentences if len(s) >= 2]


def sentence_batch(sentences: Sequence[np.ndarray], order: np.ndarray, index: int, batch_size: int):
    """Batch `index` of an epoch that visits the sentences in `order`."""
    return pad([sentences[i] for i in order[index * batch_size : (index + 1) * batch_size]])


def n_sentence_batches(n_sentences: int, batch_size: int) -> int:
    return math.ceil(n_sentences / batch_size)


class StreamChunks:
    """A token stream as `rows` parallel streams, cut into chunks of `length` steps."""

    def __init__(self, stream: np.ndarray, rows: int, length: int):
        steps = (len(stream) - 1) // rows
        if steps < 1:
            raise UserError(
                f"a stream of {len(stream)} tokens cannot feed train.batch_size={rows} parallel rows: lower it."
            )
        self.x = stream[: rows * steps].reshape(rows, steps)
        self.y = stream[1 : rows * steps + 1].reshape(rows, steps)
        self.length = length

    def __len__(self) -> int:
        return math.ceil(self.x.shape[1] / self.length)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        window = slice(index * self.length, (index + 1) * self.length)
        return self.x[:, window], self.y[:, window]
