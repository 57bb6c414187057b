"""The synthetic dependency at a random position: exact oracle, lengths that do not tell the distance."""

import math

import numpy as np
import pytest

from rnnexp.config.dataset import validate
from rnnexp.data import DatasetConfig, SyntheticConfig, load_corpus
from rnnexp.data.synthetic import END_ID, make_language
from rnnexp.errors import UserError

PLACED = dict(min_words=9, mean_words=11.0, max_words=16, key_positions=4)


def test_placed_key_probabilities_sum_to_one_and_match_the_sampled_nll():
    lang = make_language(60, SyntheticConfig(distance=3, **PLACED), np.random.default_rng(2))
    sample = lang.sample(300, np.random.default_rng(0))
    for row, length, token_nll in zip(sample.sentences, sample.lengths, sample.token_nll):
        for j in range(length - 1):
            probs = lang.next_token_probs(row[: j + 1])
            assert probs.min() >= 0 and math.isclose(probs.sum(), 1.0, abs_tol=1e-12)
            assert token_nll[j] == pytest.approx(-math.log(probs[row[j + 1]]), abs=1e-12)
        assert row[length - 1] == END_ID


def test_key_position_is_uniform_and_the_echo_is_marked():
    cfg = DatasetConfig(vocab_size=60, synthetic=SyntheticConfig(distance=5, n_keys=4, **PLACED))
    split = load_corpus(cfg).splits["train"]
    lang = make_language(60, cfg.synthetic, np.random.default_rng([0, 0]))
    positions = []
    for sentence, nll, dependent in zip(split.sentences, split.oracle_token_nll, split.dependent):
        keys = np.flatnonzero(np.isin(sentence[1:], lang.keys))
        assert len(keys) == 1 and dependent.sum() == 1
        key = int(keys[0])
        assert np.flatnonzero(dependent).tolist() == [key + 5]
        assert sentence[key + 6] == lang.echo_of[sentence[key + 1]] and nll[key + 5] == 0.0
        positions.append(key)
    counts = np.bincount(positions, minlength=4)
    assert len(counts) == 4 and np.all(np.abs(counts / len(positions) - 0.25) < 0.04)


def test_sentence_lengths_do_not_depend_on_the_distance():
    def lengths(distance: int) -> np.ndarray:
        cfg = DatasetConfig(vocab_size=60, synthetic=SyntheticConfig(distance=distance, **PLACED))
        return np.array([len(s) for s in load_corpus(cfg).splits["train"].sentences])

    near, far = lengths(2), lengths(5)
    assert near.min() == far.min() == 11  # min_words plus the two boundary tokens, whatever the distance
    assert abs(near.mean() - far.mean()) < 0.3
    stretched = load_corpus(DatasetConfig(vocab_size=60, synthetic=SyntheticConfig(distance=12, max_words=24)))
    assert min(len(s) for s in stretched.splits["train"].sentences) == 15  # today's default stretches to d + 1 words


def test_default_keeps_the_key_first():
    split = load_corpus(DatasetConfig(vocab_size=60, synthetic=SyntheticConfig(distance=4))).splits["valid"]
    assert all(np.flatnonzero(d).tolist() == [4] for d in split.dependent)


@pytest.mark.parametrize(
    "knobs, words",
    [
        (dict(key_positions=0), "at least 1"),
        (dict(distance=6, key_positions=4, min_words=9, max_words=16), "min_words"),
    ],
)
def test_impossible_placements_are_one_sentence(knobs, words):
    with pytest.raises(UserError, match=words):
        validate(DatasetConfig(synthetic=SyntheticConfig(**knobs)))
