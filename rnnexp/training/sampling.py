"""Sentences sampled from a model, decoded with its vocabulary."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnexp.data.vocab import Vocabulary
from rnnexp.errors import UserError


def sample_sentences(
    model: Any,
    vocab: Vocabulary,
    rng: np.random.Generator,
    num: int,
    max_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> list[str]:
    """`num` sentences sampled word by word from the sentence-start token, never the unknown token."""
    if vocab.start_id is None:
        raise UserError("this vocabulary has no sentence-start token to sample from: generation needs sentence data.")
    return [
        vocab.separator.join(
            vocab.decode(model.sample(rng, vocab.start_id, vocab.end_id, vocab.unknown_id, max_len, temperature, top_k))
        )
        for _ in range(num)
    ]
