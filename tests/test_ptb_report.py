"""The PTB report's pieces: the n-gram overlap (a split's n-grams seen verbatim in training), a row's rate."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from experiments.ptb.report import Row, ngram_overlap


def corpus(**streams: list[int]) -> SimpleNamespace:
    split = {name: SimpleNamespace(stream=lambda ids=ids: np.array(ids)) for name, ids in streams.items()}
    return SimpleNamespace(splits=split)


def test_overlap_counts_the_n_grams_seen_in_training_and_no_others() -> None:
    data = corpus(train=[1, 2, 3, 4, 5, 6], valid=[2, 3, 4, 5, 9], test=[9, 8, 7, 6, 5])
    overlap = ngram_overlap(data, orders=(2, 4))
    assert overlap[2] == {"valid": pytest.approx(3 / 4), "test": 0.0}  # (2,3) (3,4) (4,5) of 4 bigrams
    assert overlap[4] == {"valid": pytest.approx(1 / 2), "test": 0.0}  # (2,3,4,5) of 2 four-grams


def row_with(**metrics: float) -> Row:
    return Row("lstm_medium", {}, SimpleNamespace(data=SimpleNamespace(metrics=metrics)), None)


def test_a_row_s_rate_is_its_run_s_mean_and_a_stopped_run_s_latest() -> None:
    assert row_with(tokens_per_sec_mean=8846.0, tokens_per_sec=9100.0).tokens_per_sec == 8846.0
    assert row_with(tokens_per_sec=1875.0).tokens_per_sec == 1875.0  # killed before its end: no mean logged
    assert row_with().tokens_per_sec is None
