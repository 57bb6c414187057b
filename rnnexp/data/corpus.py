"""What every dataset hands the trainer: a vocabulary and train / valid / test token sequences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnexp.data.vocab import Vocabulary

SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class Split:
    """Sentences of token ids, boundary tokens included: train on x = s[:-1], y = s[1:].

    `oracle_token_nll[i][j]` is the exact NLL of target `sentences[i][j + 1]` under the
    generator (synthetic only); `dependent[i][j]` marks targets fixed by the long-range
    dependency. `shared_boundary` means consecutive sentences share their boundary token
    (PTB's `<eos>` ends one sentence and starts the next), so `stream()` keeps it once.
    """

    sentences: list[np.ndarray]
    oracle_token_nll: list[np.ndarray] | None = None
    dependent: list[np.ndarray] | None = None
    shared_boundary: bool = False

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def n_targets(self) -> int:
        """Predicted tokens: every token but each sentence's first."""
        return sum(len(sentence) - 1 for sentence in self.sentences)

    def stream(self) -> np.ndarray:
        """All sentences as one int32 sequence, for chunked BPTT that carries the state across."""
        if not self.sentences:
            return np.zeros(0, dtype=np.int32)
        if self.shared_boundary:
            pieces = [self.sentences[0]] + [sentence[1:] for sentence in self.sentences[1:]]
        else:
            pieces = self.sentences
        return np.concatenate(pieces).astype(np.int32, copy=False)

    @property
    def oracle_nll(self) -> float | None:
        """Mean oracle NLL per target (nats), the floor no model can beat; None without oracle."""
        if self.oracle_token_nll is None or not self.oracle_token_nll:
            return None
        return float(np.concatenate(self.oracle_token_nll).mean())


@dataclass
class Corpus:
    """A loaded dataset. `digest` identifies the source bytes and the preprocessing config."""

    name: str
    vocab: Vocabulary
    splits: dict[str, Split]
    digest: str
    params: dict[str, str] = field(default_factory=dict)  # extra MLflow params, `dataset.` keys
    stats: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the file(s) read, for the MLflow dataset input
