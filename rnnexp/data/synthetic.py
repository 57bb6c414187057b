"""The embedded default dataset: a seeded artificial language whose every probability is known.

Words are pronounceable pseudo-words built from syllables. Each word belongs to one class; a
sentence walks a sparse random Markov chain over classes (each class has `successors` possible
next classes) and emits a Zipf-distributed word of each class. After `min_words` words the
sentence ends with a fixed probability per step (giving `mean_words` on average), and always at
`max_words`. With `distance` > 0 the first word is one of `n_keys` keys, and the word `distance`
positions later is that key's echo word: a long-range dependency that a model only predicts if it
remembers the key. With `key_positions` = n the key is instead word 1..n (uniformly, in place of
a grammar word) and sentence lengths keep their configured distribution whatever the distance, so
neither the key's position nor the sentence's length tells the distance.

Since a word's class is visible and the end probability depends only on the position, the
probability of every next token given the full history is known exactly: `next_token_probs`.
The per-target NLL of the sample is that exact probability, so a split's oracle NLL is the floor
no model can beat on it (in expectation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexp.config.dataset import DatasetConfig, SyntheticConfig
from rnnexp.data.corpus import SPLIT_NAMES, Split
from rnnexp.data.prepared import Prepared
from rnnexp.data.splits import contiguous_labels
from rnnexp.data.vocab import SENTENCE_END, SENTENCE_START, Vocabulary
from rnnexp.errors import UserError

GENERATOR_VERSION = 1  # bump when the same config would generate different sentences
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLE_COUNT_PROBS = (0.15, 0.55, 0.30)  # words of 1, 2, 3 syllables
START_ID, END_ID = 0, 1


def pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct lower-case words like "kodu" or "mifera"."""
    syllables = [consonant + vowel for consonant in CONSONANTS for vowel in VOWELS]
    words: dict[str, None] = {}
    while len(words) < n:
        batch = 2 * (n - len(words)) + 16
        lengths = rng.choice(len(SYLLABLE_COUNT_PROBS), size=batch, p=SYLLABLE_COUNT_PROBS) + 1
        picks = rng.integers(len(syllables), size=(batch, len(SYLLABLE_COUNT_PROBS)))
        for length, row in zip(lengths.tolist(), picks.tolist()):
            words.setdefault("".join(syllables[i] for i in row[:length]), None)
    return list(words)[:n]


def normalised_cumsum(probs: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums ending at exactly 1.0, so a uniform u < 1 never picks a zero entry."""
    cumulative = np.cumsum(probs, axis=-1)
    return cumulative / cumulative[..., -1:]


def pick(cumulative_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row, drawn from that row's distribution."""
    u = rng.random(len(cumulative_rows))
    return (cumulative_rows <= u[:, None]).sum(axis=1)


@dataclass(frozen=True)
class Sample:
    sentences: np.ndarray  # (N, max_words + 2) token ids, -1 after SENTENCE_END
    lengths: np.ndarray  # (N,) tokens per sentence, boundaries included
    token_nll: np.ndarray  # (N, max_words + 1) exact NLL of target j (= token j + 1)
    key_word: np.ndarray  # (N,) the key's word index (its echo is target key_word + distance); -1: no key


@dataclass(frozen=True)
class SyntheticLanguage:
    """Ids: 0 SENTENCE_START, 1 SENTENCE_END, then keys, echoes (when distance > 0), then words.

    States (rows of `transition`): 0..C-1 after a word of that class, C after SENTENCE_START,
    C+1 after a key, C+2 after an echo.
    """

    words: list[str]
    state_of: np.ndarray  # (V,) the state a token leads to
    transition: np.ndarray  # (C + 3, C) next-class probabilities per state
    emission: np.ndarray  # (C, V) word probabilities per class
    end_hazard: np.ndarray  # (max_words + 1,) P(SENTENCE_END | k words so far)
    keys: np.ndarray  # key ids (empty when distance == 0)
    echo_of: np.ndarray  # (V,) the echo id of a key id, -1 elsewhere
    distance: int
    key_positions: int | None = None  # None: the key is the first word; n: uniformly word 1..n

    @property
    def max_words(self) -> int:
        return len(self.end_hazard) - 1

    def next_token_probs(self, prefix: Sequence[int]) -> np.ndarray:
        """P(next token | prefix) over the vocabulary; `prefix` starts with SENTENCE_START."""
        words_so_far = len(prefix) - 1
        hazard = self.end_hazard[words_so_far]
        probs = np.zeros(len(self.words))
        if self.distance and self.key_positions is not None:
            probs = self._placed_key_probs(prefix)
        elif self.distance and words_so_far == 0:
            probs[self.keys] = 1.0 / len(self.keys)
        elif self.distance and words_so_far == self.distance:
            probs[self.echo_of[prefix[1]]] = 1.0
        else:
            probs = self.transition[self.state_of[prefix[-1]]] @ self.emission
        probs *= 1.0 - hazard
        probs[END_ID] = hazard
        return probs

    def _placed_key_probs(self, prefix: Sequence[int]) -> np.ndarray:
        """Next-word probabilities (before the end hazard) when the key's position is uniform over `key_positions`.

        With no key among the k words so far, the key comes next with P(p = k | p >= k) = 1 / (n - k).
        """
        words = np.asarray(prefix[1:], dtype=np.int64)
        seen = np.flatnonzero(np.isin(words, self.keys))
        grammar = self.transition[self.state_of[prefix[-1]]] @ self.emission
        if seen.size:
            if len(words) != seen[0] + self.distance:
                return grammar
            probs = np.zeros(len(self.words))
            probs[self.echo_of[words[seen[0]]]] = 1.0
            return probs
        assert self.key_positions is not None
        chance = 1.0 / (self.key_positions - len(words)) if len(words) < self.key_positions else 0.0
        probs = (1.0 - chance) * grammar
        probs[self.keys] += chance / len(self.keys)
        return probs

    def sample(self, n_sentences: int, rng: np.random.Generator) -> Sample:
        """`n_sentences` sentences and the exact NLL of each target, all sentences in lock-step."""
        if self.distance and self.key_positions is not None:
            return self._sample_placed(n_sentences, rng)
        steps = self.max_words + 1
        tokens = np.full((n_sentences, steps + 1), -1, dtype=np.int64)
        tokens[:, 0] = START_ID
        token_nll = np.zeros((n_sentences, steps))
        lengths = np.zeros(n_sentences, dtype=np.int64)
        state = np.full(n_sentences, self.transition.shape[1])
        transition_cdf, emission_cdf = normalised_cumsum(self.transition), normalised_cumsum(self.emission)
        alive = np.arange(n_sentences)
        for k in range(steps):
            hazard = self.end_hazard[k]
            ends = rng.random(len(alive)) < hazard
            done = alive[ends]
            tokens[done, k + 1] = END_ID
            token_nll[done, k] = -math.log(hazard) if done.size else 0.0
            lengths[done] = k + 2
            alive = alive[~ends]
            if not alive.size:
                break
            if self.distance and k == 0:
                words = self.keys[rng.integers(len(self.keys), size=len(alive))]
                log_prob = np.full(len(alive), -math.log(len(self.keys)))
            elif self.distance and k == self.distance:
                words = self.echo_of[tokens[alive, 1]]
                log_prob = np.zeros(len(alive))
            else:
                classes = pick(transition_cdf[state[alive]], rng)
                words = pick(emission_cdf[classes], rng)
                log_prob = np.log(self.transition[state[alive], classes]) + np.log(self.emission[classes, words])
            tokens[alive, k + 1] = words
            token_nll[alive, k] = -(math.log1p(-hazard) + log_prob)
            state[alive] = self.state_of[words]
        key_word = np.zeros(n_sentences, dtype=np.int64) if self.distance else np.full(n_sentences, -1)
        return Sample(tokens, lengths, token_nll, key_word)

    def _sample_placed(self, n_sentences: int, rng: np.random.Generator) -> Sample:
        """`sample` with the key at a uniform word position < key_positions, in place of a grammar word."""
        assert self.key_positions is not None
        n, steps = self.key_positions, self.max_words + 1
        tokens = np.full((n_sentences, steps + 1), -1, dtype=np.int64)
        tokens[:, 0] = START_ID
        token_nll = np.zeros((n_sentences, steps))
        lengths = np.zeros(n_sentences, dtype=np.int64)
        state = np.full(n_sentences, self.transition.shape[1])
        transition_cdf, emission_cdf = normalised_cumsum(self.transition), normalised_cumsum(self.emission)
        key_word = rng.integers(n, size=n_sentences)
        alive = np.arange(n_sentences)
        for k in range(steps):
            hazard = self.end_hazard[k]
            ends = rng.random(len(alive)) < hazard
            done = alive[ends]
            tokens[done, k + 1] = END_ID
            token_nll[done, k] = -math.log(hazard) if done.size else 0.0
            lengths[done] = k + 2
            alive = alive[~ends]
            if not alive.size:
                break
            classes = pick(transition_cdf[state[alive]], rng)
            words = pick(emission_cdf[classes], rng)
            log_prob = np.log(self.transition[state[alive], classes]) + np.log(self.emission[classes, words])
            place = key_word[alive]
            before, is_key, is_echo = k < place, k == place, k == place + self.distance
            if k < n:  # the key could come at word k: P = 1 / (n - k) that it does, given it has not yet
                log_prob[before] += math.log1p(-1.0 / (n - k)) if k < n - 1 else 0.0
                words[is_key] = self.keys[rng.integers(len(self.keys), size=int(is_key.sum()))]
                log_prob[is_key] = -math.log(len(self.keys)) - math.log(n - k)
            words[is_echo] = self.echo_of[tokens[alive[is_echo], place[is_echo] + 1]]
            log_prob[is_echo] = 0.0
            tokens[alive, k + 1] = words
            token_nll[alive, k] = -(math.log1p(-hazard) + log_prob)
            state[alive] = self.state_of[words]
        return Sample(tokens, lengths, token_nll, key_word)


def make_language(vocab_size: int, cfg: SyntheticConfig, rng: np.random.Generator) -> SyntheticLanguage:
    """Draw a language of exactly `vocab_size` tokens from `rng`."""
    n_keys = cfg.n_keys if cfg.distance else 0
    n_regular = vocab_size - 2 - 2 * n_keys
    n_classes = cfg.n_classes
    if n_regular < n_classes:
        raise UserError(
            f"dataset.vocab_size={vocab_size} leaves {n_regular} ordinary words for the synthetic "
            f"language's {n_classes} classes (after 2 boundary tokens and {2 * n_keys} key/echo "
            "words); raise dataset.vocab_size or lower dataset.synthetic.n_classes."
        )
    words = [SENTENCE_START, SENTENCE_END, *pseudo_words(vocab_size - 2, rng)]
    first_regular = 2 + 2 * n_keys
    keys = np.arange(2, 2 + n_keys)
    echo_of = np.full(vocab_size, -1)
    echo_of[keys] = keys + n_keys

    word_class = rng.permutation(np.arange(n_regular) % n_classes)
    emission = np.zeros((n_classes, vocab_size))
    for cls in range(n_classes):
        members = first_regular + np.flatnonzero(word_class == cls)
        weights = 1.0 / np.arange(1, len(members) + 1) ** cfg.zipf_exponent
        emission[cls, members] = weights / weights.sum()

    n_states = n_classes + 3
    transition = np.zeros((n_states, n_classes))
    fan_out = min(cfg.successors, n_classes)
    for row in range(n_states):
        successors = rng.choice(n_classes, size=fan_out, replace=False)
        transition[row, successors] = rng.dirichlet(np.ones(fan_out))

    state_of = np.empty(vocab_size, dtype=np.int64)
    state_of[first_regular:] = word_class
    state_of[START_ID] = n_classes
    state_of[END_ID] = n_classes  # never followed; any valid row
    state_of[keys] = n_classes + 1
    state_of[keys + n_keys] = n_classes + 2

    stretch = cfg.distance + 1 if cfg.distance and cfg.key_positions is None else 0
    min_words = max(cfg.min_words, stretch)
    mean_words = max(cfg.mean_words, min_words)
    end_hazard = np.zeros(cfg.max_words + 1)
    end_hazard[min_words:] = 1.0 / (mean_words - min_words + 1.0)
    end_hazard[cfg.max_words] = 1.0
    return SyntheticLanguage(
        words,
        state_of,
        transition,
        emission,
        end_hazard,
        keys,
        echo_of,
        cfg.distance,
        cfg.key_positions if cfg.distance else None,
    )


def language_seed(cfg: DatasetConfig, seed: int) -> int:
    """The configured generator seed, or the run's when it is left null."""
    return seed if cfg.synthetic.seed is None else cfg.synthetic.seed


def key_extras(cfg: DatasetConfig, seed: int) -> dict[str, Any]:
    return {"language_seed": language_seed(cfg, seed), "generator": GENERATOR_VERSION}


def dependency_marks(n_targets: int, distance: int, key_word: int = 0) -> np.ndarray:
    """True at the target the key fixes (target `key_word + distance`, the echo); all False with the knob off."""
    marks = np.zeros(n_targets, dtype=bool)
    if distance:
        marks[key_word + distance] = True
    return marks


def prepare(cfg: DatasetConfig, seed: int) -> Prepared:
    syn = cfg.synthetic
    chosen_seed = language_seed(cfg, seed)
    language = make_language(cfg.vocab_size, syn, np.random.default_rng([chosen_seed, 0]))
    n_sentences = min(syn.n_sentences, cfg.max_sentences or syn.n_sentences)
    sample = language.sample(n_sentences, np.random.default_rng([chosen_seed, 1]))
    labels = contiguous_labels(n_sentences, cfg.valid_fraction, cfg.test_fraction, "sentences")
    splits = {}
    for label, name in enumerate(SPLIT_NAMES):
        rows = np.flatnonzero(labels == label)
        sentences = [sample.sentences[i, : sample.lengths[i]].astype(np.int32) for i in rows]
        nll = [sample.token_nll[i, : sample.lengths[i] - 1] for i in rows]
        dependent = [
            dependency_marks(len(target), syn.distance, int(sample.key_word[i])) for target, i in zip(nll, rows)
        ]
        splits[name] = Split(sentences, oracle_token_nll=nll, dependent=dependent)
    vocab = Vocabulary(language.words, start=SENTENCE_START, end=SENTENCE_END)
    stats: dict[str, Any] = {"language_seed": chosen_seed}
    for name, split in splits.items():
        if split.oracle_nll is not None:
            stats[f"{name}.oracle_nll"] = split.oracle_nll
            stats[f"{name}.oracle_ppl"] = math.exp(split.oracle_nll)
    return Prepared(vocab, splits, {"dataset.oracle": "exact"}, stats)


def describe(stats: dict[str, Any], vocab_size: int) -> list[str]:
    oracle = ", ".join(
        f"{name} {stats[f'{name}.oracle_ppl']:.2f}" for name in SPLIT_NAMES if f"{name}.oracle_ppl" in stats
    )
    return [f"Synthetic language (seed {stats['language_seed']}, {vocab_size} tokens); oracle perplexity: {oracle}."]
