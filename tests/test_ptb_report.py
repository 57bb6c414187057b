"""The PTB report's n-gram overlap: the share of a split's n-grams that occur verbatim in training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from experiments.ptb.report import ngram_overlap


def corpus(**streams: list[int]) -> SimpleNamespace:
    split = {name: SimpleNamespace(stream=lambda ids=ids: np.array(ids)) for name, ids in streams.items()}
    return SimpleNamespace(splits=split)


def test_overlap_counts_the_n_grams_seen_in_training_and_no_others() -> None:
    data = corpus(train=[1, 2, 3, 4, 5, 6], valid=[2, 3, 4, 5, 9], test=[9, 8, 7, 6, 5])
    overlap = ngram_overlap(data, orders=(2, 4))
    assert overlap[2] == {"valid": pytest.approx(3 / 4), "test": 0.0}  # (2,3) (3,4) (4,5) of 4 bigrams
    assert overlap[4] == {"valid": pytest.approx(1 / 2), "test": 0.0}  # (2,3,4,5) of 2 four-grams
