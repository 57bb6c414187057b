"""The embedded synthetic language: deterministic, fast, and its oracle NLL is exact."""

import math
import re
import time

import numpy as np
import pytest

from rnnexp.config.dataset import validate
from rnnexp.data import DatasetConfig, SyntheticConfig, load_corpus
from rnnexp.data.synthetic import END_ID, START_ID, make_language
from rnnexp.errors import UserError


def language(distance=0, vocab_size=60, seed=3, **knobs):
    cfg = SyntheticConfig(distance=distance, **knobs)
    return make_language(vocab_size, cfg, np.random.default_rng(seed))


def test_same_seed_same_corpus_other_seed_other_corpus():
    first = load_corpus(DatasetConfig(vocab_size=100), seed=1)
    again = load_corpus(DatasetConfig(vocab_size=100), seed=2)  # run seed unused: synthetic.seed=0
    other = load_corpus(DatasetConfig(vocab_size=100, synthetic=SyntheticConfig(seed=1)))
    assert first.vocab == again.vocab
    assert np.array_equal(first.splits["train"].stream(), again.splits["train"].stream())
    assert first.digest == again.digest
    assert not np.array_equal(first.splits["train"].stream()[:200], other.splits["train"].stream()[:200])
    assert first.digest != other.digest


def test_null_generator_seed_follows_the_run_seed():
    cfg = DatasetConfig(vocab_size=100, synthetic=SyntheticConfig(seed=None))
    assert load_corpus(cfg, seed=7).stats["language_seed"] == 7
    assert load_corpus(cfg, seed=8).digest != load_corpus(cfg, seed=7).digest


def test_default_sizes_and_shape_of_the_data():
    corpus = load_corpus(DatasetConfig(vocab_size=300))
    assert [len(corpus.splits[name]) for name in ("train", "valid", "test")] == [3200, 400, 400]
    assert len(corpus.vocab) == 300 and corpus.vocab.unknown_id is None
    lengths = np.array([len(s) for s in corpus.splits["train"].sentences])
    assert lengths.min() >= 6 and lengths.max() <= 20  # 4..18 words plus the two boundary tokens
    assert 9.5 < lengths.mean() < 11.5
    for sentence in corpus.splits["train"].sentences[:50]:
        assert sentence[0] == corpus.vocab.start_id and sentence[-1] == corpus.vocab.end_id
        assert corpus.vocab.start_id not in sentence[1:] and corpus.vocab.end_id not in sentence[:-1]
    pseudo_word = re.compile(r"^([bdfgklmnprstvz][aeiou]){1,3}$")
    assert all(pseudo_word.match(word) for word in corpus.vocab.words[2:])


def test_generation_is_fast():
    started = time.perf_counter()
    load_corpus(DatasetConfig(vocab_size=500, synthetic=SyntheticConfig(n_sentences=4000, distance=5)))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("distance", [0, 3])
def test_next_token_distributions_sum_to_one_and_match_the_sampled_nll(distance):
    lang = language(distance)
    sample = lang.sample(200, np.random.default_rng(0))
    for row, length, token_nll in zip(sample.sentences, sample.lengths, sample.token_nll):
        for j in range(length - 1):
            probs = lang.next_token_probs(row[: j + 1])
            assert probs.min() >= 0 and math.isclose(probs.sum(), 1.0, abs_tol=1e-12)
            assert token_nll[j] == pytest.approx(-math.log(probs[row[j + 1]]), abs=1e-12)
        assert row[length - 1] == END_ID


def test_empirical_frequencies_match_the_oracle_probabilities():
    lang = language(distance=0, vocab_size=40)
    sample = lang.sample(40000, np.random.default_rng(1))
    first = np.bincount(sample.sentences[:, 1], minlength=40) / 40000
    expected = lang.next_token_probs([START_ID])
    tolerance = 5 * np.sqrt(expected * (1 - expected) / 40000) + 1e-9
    assert np.all(np.abs(first - expected) <= tolerance)
    # sentence lengths: words = lengths - 2, ending with the configured hazard after min_words
    words = sample.lengths - 2
    survive = np.cumprod(1 - lang.end_hazard)
    p_words = np.concatenate([[lang.end_hazard[0]], survive[:-1] * lang.end_hazard[1:]])
    observed = np.bincount(words, minlength=len(p_words)) / len(words)
    assert np.all(np.abs(observed - p_words) <= 5 * np.sqrt(p_words * (1 - p_words) / len(words)) + 1e-9)


def test_long_range_dependency_is_marked_and_predictable():
    cfg = DatasetConfig(vocab_size=60, synthetic=SyntheticConfig(distance=5, n_keys=4))
    corpus = load_corpus(cfg)
    split = corpus.splits["train"]
    lang = make_language(60, cfg.synthetic, np.random.default_rng([0, 0]))
    for sentence, nll, dependent in zip(split.sentences, split.oracle_token_nll, split.dependent):
        assert dependent.tolist() == [j == 5 for j in range(len(sentence) - 1)]
        assert sentence[1] in lang.keys
        assert sentence[6] == lang.echo_of[sentence[1]]  # target 5 is token 6
        assert nll[5] == 0.0
        assert nll[0] == pytest.approx(math.log(4))
    no_dependency = load_corpus(DatasetConfig(vocab_size=60)).splits["train"]
    assert not any(d.any() for d in no_dependency.dependent)


def test_oracle_beats_a_bigram_model_fit_on_lots_of_data():
    lang = language(distance=4, vocab_size=80)
    fit = lang.sample(30000, np.random.default_rng(5))
    held_out = lang.sample(3000, np.random.default_rng(6))
    counts = np.full((80, 80), 0.01)
    for row, length in zip(fit.sentences, fit.lengths):
        np.add.at(counts, (row[: length - 1], row[1:length]), 1)
    bigram = counts / counts.sum(axis=1, keepdims=True)
    bigram_nll, oracle_nll = [], []
    for row, length, nll in zip(held_out.sentences, held_out.lengths, held_out.token_nll):
        bigram_nll.append(-np.log(bigram[row[: length - 1], row[1:length]]))
        oracle_nll.append(nll[: length - 1])
    bigram_mean, oracle_mean = np.concatenate(bigram_nll).mean(), np.concatenate(oracle_nll).mean()
    assert oracle_mean < bigram_mean - 0.1
    assert oracle_mean > 0.5


def test_split_oracle_nll_is_the_mean_over_targets_and_reported_in_stats():
    corpus = load_corpus(DatasetConfig(vocab_size=100))
    valid = corpus.splits["valid"]
    assert valid.oracle_nll == pytest.approx(np.concatenate(valid.oracle_token_nll).mean())
    assert corpus.stats["valid.oracle_ppl"] == pytest.approx(math.exp(valid.oracle_nll))
    assert sum(len(n) for n in valid.oracle_token_nll) == valid.n_targets == corpus.stats["valid.targets"]


def test_impossible_languages_are_user_errors():
    with pytest.raises(UserError, match="dataset.vocab_size=10 leaves 8 ordinary words"):
        load_corpus(DatasetConfig(vocab_size=10))
    with pytest.raises(UserError, match="distance=20 needs sentences of at least 21 words"):
        validate(DatasetConfig(synthetic=SyntheticConfig(distance=20)))
    with pytest.raises(UserError, match="mean_words"):
        validate(DatasetConfig(synthetic=SyntheticConfig(mean_words=30)))
    with pytest.raises(UserError, match="n_sentences"):
        validate(DatasetConfig(synthetic=SyntheticConfig(n_sentences=0)))
