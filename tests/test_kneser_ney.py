"""The interpolated Kneser–Ney baseline: normalisation, a hand-worked example, a slow dictionary reference."""

import math
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rnnexp.engine.kneser_ney import KneserNey, interpolated_nll, tune_interpolation
from rnnexp.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PTB_VALID = SHARED_DATA / "ptb.valid.txt"
needs_ptb = pytest.mark.skipif(not PTB_VALID.exists(), reason=f"{PTB_VALID} is absent")

ORDERS = [1, 2, 3, 4, 5]
FLAVOURS = [pytest.param(False, id="plain"), pytest.param(True, id="modified")]


def skewed_corpus(seed: int, n_tokens: int, n_used: int) -> np.ndarray:
    """Random ids with Zipf-like frequencies, so the counts of counts n1..n4 all occur."""
    weights = 1.0 / np.arange(1, n_used + 1)
    return np.random.default_rng(seed).choice(n_used, size=n_tokens, p=weights / weights.sum())


def windows(tokens, length: int) -> set[tuple[int, ...]]:
    return {tuple(int(t) for t in tokens[i : i + length]) for i in range(len(tokens) - length + 1)}


# --- 1. every context's distribution sums to one -------------------------------------------------


@pytest.mark.parametrize("modified", FLAVOURS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("as_sentences", [False, True], ids=["stream", "sentences"])
def test_every_context_distribution_sums_to_one(order, modified, as_sentences):
    vocab_size = 8  # ids 6 and 7 never occur in training
    corpus = skewed_corpus(seed=order, n_tokens=90, n_used=6)
    training = np.split(corpus, [13, 20, 41, 44, 70]) if as_sentences else corpus
    model = KneserNey.fit(training, order, vocab_size, modified)
    seen = set().union(*(windows(corpus, length) for length in range(order)))
    unseen = {(7,), (6, 7), (0, 7, 1), (7, 0, 0, 1), (5, 5, 5, 5), (1, 2, 3, 4, 5, 0, 1)}
    for context in sorted(seen | unseen):
        distribution = model.distribution(context)
        assert distribution.shape == (vocab_size,)
        assert np.all(distribution > 0), context
        assert abs(distribution.sum() - 1.0) < 1e-12, context


# --- 2. a bigram model worked out by hand -----------------------------------------------------------

HAND_CORPUS = np.array([2, 1, 2, 2, 2, 1, 2, 2, 0, 1])  # vocabulary 0..3; id 3 never occurs
# Bigram counts (9 bigrams): 21:2, 12:2, 22:3, 20:1, 01:1  -> n1 = 2, n2 = 2, D = 2 / (2 + 2*2) = 1/3.
# Unigram continuation counts (distinct left neighbours, plus 1 for the stream's first token 2):
#   0: {2} -> 1;  1: {2, 0} -> 2;  2: {1, 2} + start -> 3;  3: 0.  Total 6; n1 = 1, n2 = 1, D = 1/3.
# Unigram gamma = 3 types * 1/3 / 6 = 1/6, spread uniformly: 1/6 * 1/4 = 1/24 = 3/72 per id.
#   P1(0) = (1 - 1/3)/6 + 3/72 = 11/72    P1(1) = (2 - 1/3)/6 + 3/72 = 23/72
#   P1(2) = (3 - 1/3)/6 + 3/72 = 35/72    P1(3) = 3/72
UNIGRAM = [Fraction(11, 72), Fraction(23, 72), Fraction(35, 72), Fraction(3, 72)]
# Context 0: c(0.) = 1 (01:1), gamma = 1/3:      P(1|0) = (1 - 1/3)/1 + 1/3 * 23/72 = 167/216
# Context 1: c(1.) = 2 (12:2), gamma = 1/3 / 2:  P(2|1) = (2 - 1/3)/2 + 1/6 * 35/72 = 395/432
# Context 2: c(2.) = 6 (21:2, 22:3, 20:1), gamma = 3 * 1/3 / 6 = 1/6:
#   P(0|2) = (1 - 1/3)/6 + 11/432 = 59/432,  P(1|2) = (2 - 1/3)/6 + 23/432 = 143/432,
#   P(2|2) = (3 - 1/3)/6 + 35/432 = 227/432, P(3|2) = 3/432.
# Context 3 was never seen, so P(.|3) = P1.
BIGRAM = {
    (0,): [Fraction(11, 216), Fraction(167, 216), Fraction(35, 216), Fraction(3, 216)],
    (1,): [Fraction(11, 432), Fraction(23, 432), Fraction(395, 432), Fraction(3, 432)],
    (2,): [Fraction(59, 432), Fraction(143, 432), Fraction(227, 432), Fraction(3, 432)],
    (3,): UNIGRAM,
}


def test_hand_computed_bigram_plain_discount():
    model = KneserNey.fit(HAND_CORPUS, order=2, vocab_size=4, modified=False)
    for context, expected in [((), UNIGRAM), *BIGRAM.items()]:
        assert sum(expected) == 1
        np.testing.assert_allclose(model.distribution(context), [float(p) for p in expected], rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.distribution((3, 1, 0)), [float(p) for p in BIGRAM[(0,)]], rtol=0, atol=1e-12)

    expected_training = [BIGRAM[(int(a),)][int(b)] for a, b in zip(HAND_CORPUS, HAND_CORPUS[1:])]
    assert expected_training[-1] == Fraction(167, 216) and expected_training[0] == Fraction(143, 432)
    np.testing.assert_allclose(
        model.token_nll(HAND_CORPUS), [-math.log(p) for p in expected_training], rtol=0, atol=1e-12
    )
    unseen_text = np.array([3, 0, 3])  # P(0|3) = P1(0), P(3|0) = 3/216
    np.testing.assert_allclose(
        model.token_nll(unseen_text), [-math.log(11 / 72), -math.log(3 / 216)], rtol=0, atol=1e-12
    )


# --- 3. against a slow reference that follows the recursive formula literally -------------------------


def reference_discounts(counts: Counter, modified: bool) -> dict[int, float]:
    """D by count class (3 meaning 3+), with the fallbacks and clamps the module docstring states."""
    n = {c: sum(1 for value in counts.values() if value == c) for c in (1, 2, 3, 4)}
    y = n[1] / (n[1] + 2 * n[2]) if n[1] + 2 * n[2] > 0 else 0.5
    plain = min(max(y, 0.01), 0.99)
    if not modified:
        return {1: plain, 2: plain, 3: plain}
    raw = {
        1: 1 - 2 * y * n[2] / n[1] if n[1] else plain,
        2: 2 - 3 * y * n[3] / n[2] if n[2] else plain,
        3: 3 - 4 * y * n[4] / n[3] if n[3] else plain,
    }
    return {c: min(max(d, 0.01), c - 0.01) for c, d in raw.items()}


def reference_token_nll(train: list[list[int]], test: list[list[int]], order: int, vocab_size: int, modified: bool):
    """Counter-based counts and the textbook recursion, one Python call per order per token: slow but obvious."""
    counts: dict[int, Counter] = {}
    for k in range(1, order + 1):
        counts[k] = Counter()
        left_neighbours = defaultdict(set)
        for sentence in train:
            for start in range(len(sentence) - k + 1):
                gram = tuple(sentence[start : start + k])
                if k == order or start == 0:
                    counts[k][gram] += 1  # raw count: highest order, or no left neighbour exists
                else:
                    left_neighbours[gram].add(sentence[start - 1])
        for gram, neighbours in left_neighbours.items():
            counts[k][gram] += len(neighbours)
    discounts = {k: reference_discounts(counts[k], modified) for k in counts}

    context_total = {k: Counter() for k in counts}
    context_n = {k: defaultdict(Counter) for k in counts}  # N1, N2, N3+ per context
    for k, table in counts.items():
        for gram, count in table.items():
            context_total[k][gram[:-1]] += count
            context_n[k][gram[:-1]][min(count, 3)] += 1

    def probability(word: int, history: tuple[int, ...]) -> float:
        k = len(history) + 1
        lower = 1 / vocab_size if k == 1 else probability(word, history[1:])
        total = context_total[k][history]
        if total == 0:
            return lower
        count = counts[k][history + (word,)]
        discount = discounts[k][min(count, 3)] if count else 0.0
        gamma = sum(discounts[k][c] * context_n[k][history][c] for c in (1, 2, 3)) / total
        return max(count - discount, 0) / total + gamma * lower

    return [
        -math.log(probability(sentence[i], tuple(sentence[max(0, i - order + 1) : i])))
        for sentence in test
        for i in range(1, len(sentence))
    ]


@pytest.fixture(scope="module")
def ptb_lines():
    """The first 24 lines of the PTB validation text as [<eos>, words..., <eos>] id lists, and the vocabulary size."""
    lines = [line.split() for line in PTB_VALID.read_text().splitlines()[:24]]
    words = sorted({word for line in lines for word in line} | {"<eos>"})
    index = {word: i for i, word in enumerate(words)}
    return [[index["<eos>"], *(index[word] for word in line), index["<eos>"]] for line in lines], len(words)


@needs_ptb
@pytest.mark.parametrize("modified", FLAVOURS)
@pytest.mark.parametrize("order", [2, 3])
def test_matches_the_dictionary_reference_on_ptb_text(ptb_lines, order, modified):
    sentences, vocab_size = ptb_lines
    train, test = sentences[:16], sentences[16:]
    assert 300 < sum(map(len, train)) < 600
    stream_train = [[train[0][0], *(token for sentence in train for token in sentence[1:])]]
    stream_test = [[test[0][0], *(token for sentence in test for token in sentence[1:])]]
    for train_seqs, test_seqs, as_input in [
        (train, test, lambda seqs: [np.array(s) for s in seqs]),
        (stream_train, stream_test, lambda seqs: np.array(seqs[0])),
    ]:
        model = KneserNey.fit(as_input(train_seqs), order, vocab_size, modified)
        for scored in (test_seqs, train_seqs):
            expected = reference_token_nll(train_seqs, scored, order, vocab_size, modified)
            np.testing.assert_allclose(model.token_nll(as_input(scored)), expected, rtol=0, atol=1e-9)


# --- 4. sentences versus a stream ----------------------------------------------------------------------


def test_sentence_input_keeps_ngrams_inside_sentences():
    corpus = skewed_corpus(seed=11, n_tokens=400, n_used=8)
    sentences = np.split(corpus, np.arange(9, 400, 13))  # the last one is a lone token: no target
    by_sentence = KneserNey.fit(sentences, order=3, vocab_size=8)
    as_stream = KneserNey.fit(corpus, order=3, vocab_size=8)

    sentence_nll = by_sentence.token_nll(sentences)
    stream_nll = by_sentence.token_nll(corpus)
    assert len(sentence_nll) == sum(len(s) - 1 for s in sentences) == len(corpus) - len(sentences)
    assert len(stream_nll) == len(corpus) - 1
    assert not np.allclose(as_stream.token_nll(sentences), sentence_nll)
    assert not np.allclose(as_stream.token_nll(corpus), stream_nll)

    def nll_from_distributions(model, sequences):
        """Each target scored from its own sequence's last two tokens, which may be fewer at the start."""
        return [
            -math.log(model.distribution(tuple(int(t) for t in sequence[max(0, i - 2) : i]))[sequence[i]])
            for sequence in sequences
            for i in range(1, len(sequence))
        ]

    np.testing.assert_allclose(sentence_nll, nll_from_distributions(by_sentence, sentences), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stream_nll, nll_from_distributions(by_sentence, [corpus]), rtol=0, atol=1e-12)


# --- 5. mistakes a user can make --------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 6])
def test_order_outside_one_to_five_is_refused(order):
    with pytest.raises(UserError, match="KN order must be between 1 and 5"):
        KneserNey.fit(np.array([0, 1, 2]), order=order, vocab_size=3)


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(UserError, match=r"ids must lie in 0\.\.2"):
        KneserNey.fit(np.array([0, 1, 3]), order=2, vocab_size=3)
    with pytest.raises(UserError, match=r"ids must lie in 0\.\.2"):
        KneserNey.fit([np.array([0, 1]), np.array([-1, 2])], order=2, vocab_size=3)
    model = KneserNey.fit(np.array([0, 1, 2, 1]), order=2, vocab_size=3)
    with pytest.raises(UserError, match=r"ids must lie in 0\.\.2"):
        model.token_nll(np.array([0, 5]))
    with pytest.raises(UserError, match=r"ids must lie in 0\.\.2"):
        model.distribution((3,))
    with pytest.raises(UserError, match="1-D integer id arrays"):
        model.token_nll(np.array([0.0, 1.0]))
    with pytest.raises(UserError, match="no tokens"):
        KneserNey.fit([], order=2, vocab_size=3)


# --- 6. interpolating with another model --------------------------------------------------------------------


def test_identical_models_mix_to_themselves():
    nll = np.random.default_rng(0).exponential(3.0, size=500)
    lam = tune_interpolation(nll, nll)
    assert 0.0 <= lam <= 1.0
    for weight in (lam, 0.0, 0.3, 1.0):
        np.testing.assert_allclose(interpolated_nll(nll, nll, weight), nll, rtol=1e-12)


def test_a_model_better_on_every_token_takes_all_the_weight():
    baseline = np.random.default_rng(1).exponential(3.0, size=500)
    better = baseline - 0.5
    assert tune_interpolation(better, baseline) == 1.0
    assert tune_interpolation(baseline, better) == 0.0


def test_symmetric_disagreement_splits_the_weight_evenly():
    model = -np.log(np.tile([0.8, 0.2], 100))
    baseline = -np.log(np.tile([0.2, 0.8], 100))
    assert tune_interpolation(model, baseline) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_the_tuned_mix_is_never_worse_than_the_better_model(seed):
    rng = np.random.default_rng(seed)
    model = rng.exponential(4.0, size=1000)
    baseline = model + rng.normal(seed - 2, 2.0, size=1000)
    lam = tune_interpolation(model, baseline)
    assert interpolated_nll(model, baseline, lam).mean() <= min(model.mean(), baseline.mean()) + 1e-12


def test_interpolation_refuses_mismatched_scores_and_weights():
    with pytest.raises(UserError, match="equally long"):
        tune_interpolation(np.ones(3), np.ones(4))
    with pytest.raises(UserError, match=r"in \[0, 1\]"):
        interpolated_nll(np.ones(3), np.ones(3), 1.5)
