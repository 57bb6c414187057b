"""What a dataset module builds from its sources, before the loader adds the digest and caches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexp.data.corpus import SPLIT_NAMES, Split
from rnnexp.data.vocab import Vocabulary
from rnnexp.errors import UserError


@dataclass
class Prepared:
    """A dataset module's result: everything of the corpus except its digest and source."""

    vocab: Vocabulary
    splits: dict[str, Split]
    params: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # said now, and again on every cached load


def encode_splits(vocab: Vocabulary, token_lists: list[list[str]], labels: np.ndarray) -> dict[str, Split]:
    """Encode each tokenised sentence into the split its label names (0 train, 1 valid, 2 test)."""
    sentences: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for tokens, label in zip(token_lists, labels.tolist()):
        sentences[SPLIT_NAMES[label]].append(vocab.encode(tokens))
    return {name: Split(sentences[name]) for name in SPLIT_NAMES}


def training_sentences(token_lists: list[list[str]], labels: np.ndarray) -> list[list[str]]:
    """The train split's sentences in source order (the vocabulary is built from these alone)."""
    return [tokens for tokens, label in zip(token_lists, labels.tolist()) if label == 0]


def drop_short(
    units: list[list[str]], min_tokens: int, unit: str, empty_error: str
) -> tuple[list[list[str]], list[str]]:
    """The units longer than `min_tokens`, with a warning that counts the dropped ones (none: `empty_error`)."""
    kept = [tokens for tokens in units if len(tokens) > min_tokens]
    if not kept:
        raise UserError(empty_error)
    dropped = len(units) - len(kept)
    warnings = [
        f"Dropped {dropped} of {len(units)} {unit} with {min_tokens} tokens or fewer (dataset.min_sentence_tokens)."
    ]
    return kept, warnings if dropped else []
