"""Word <-> id mapping, and building one from token counts the way the tutorial does.

The vocabulary travels with a run (JSON, never pickle) so a checkpoint can generate text later.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnexp.errors import UserError

SENTENCE_START = "SENTENCE_START"
SENTENCE_END = "SENTENCE_END"
UNKNOWN_TOKEN = "UNKNOWN_TOKEN"


class Vocabulary:
    """Ids are positions in `words`; special tokens are optional (None when a dataset has none)."""

    def __init__(
        self,
        words: Sequence[str],
        *,
        unknown: str | None = None,
        start: str | None = None,
        end: str | None = None,
        separator: str = " ",
    ) -> None:
        self.words = list(words)
        self._ids = {word: i for i, word in enumerate(self.words)}
        if len(self._ids) != len(self.words):
            raise ValueError("vocabulary words must be distinct")
        for special in (unknown, start, end):
            if special is not None and special not in self._ids:
                raise ValueError(f"special token {special!r} is not in the vocabulary")
        self.unknown, self.start, self.end = unknown, start, end
        self.separator = separator  # joins tokens back into text: " " for words, "" for chars

    @property
    def unknown_id(self) -> int | None:
        return None if self.unknown is None else self._ids[self.unknown]

    @property
    def start_id(self) -> int | None:
        return None if self.start is None else self._ids[self.start]

    @property
    def end_id(self) -> int | None:
        return None if self.end is None else self._ids[self.end]

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words, unknown={self.unknown!r})"

    def index(self, word: str) -> int:
        """The id of `word`; unknown words map to the unknown token, or raise KeyError without one."""
        found = self._ids.get(word, self.unknown_id)
        if found is None:
            raise KeyError(word)
        return found

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Token ids as int32, unknown words mapped like `index`."""
        ids, unknown_id = self._ids, self.unknown_id
        if unknown_id is None:
            return np.array([ids[token] for token in tokens], dtype=np.int32)
        return np.array([ids.get(token, unknown_id) for token in tokens], dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def to_json(self) -> str:
        return json.dumps(
            {
                "words": self.words,
                "unknown": self.unknown,
                "start": self.start,
                "end": self.end,
                "separator": self.separator,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        return cls(
            data["words"],
            unknown=data["unknown"],
            start=data["start"],
            end=data["end"],
            separator=data["separator"],
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class VocabularyReport:
    """What building the vocabulary found, for logs and corpus.stats."""

    unique_tokens: int  # distinct tokens seen (the tutorial's "unique words tokens")
    least_frequent_word: str
    least_frequent_count: int
    requested_size: int
    size: int
    clamp_warning: str | None  # set when vocab_size was more than the data has


def build_vocabulary(
    sentences: Iterable[Sequence[str]],
    vocab_size: int,
    *,
    unknown: str = UNKNOWN_TOKEN,
    keep: Sequence[str] = (),
    start: str | None = None,
    end: str | None = None,
    separator: str = " ",
) -> tuple[Vocabulary, VocabularyReport]:
    """The tutorial's vocabulary: the `vocab_size - 1` most frequent tokens, then `unknown`.

    Ranking is `nltk.FreqDist(...).most_common()`: count descending, ties broken by first
    occurrence in the (ordered) training sentences. Tokens in `keep` (sentence boundaries) are
    always kept; `unknown` occurring in the data (PTB's `<unk>`) is not ranked but put last.
    `vocab_size` beyond the distinct tokens + 1 is clamped with a warning text in the report.
    """
    import nltk  # here, not at the top: importing nltk takes ~2.5 s, which a cache hit skips

    frequencies = nltk.FreqDist(itertools.chain.from_iterable(sentences))
    ranked = [(word, count) for word, count in frequencies.most_common() if word != unknown]
    if not ranked:
        raise UserError("The training split has no tokens; check the data file and split fractions.")
    wanted = vocab_size - 1
    clamp_warning = None
    if wanted > len(ranked):
        clamp_warning = (
            f"dataset.vocab_size={vocab_size} is more than the {len(ranked)} distinct training tokens "
            f"plus {unknown}: using {len(ranked) + 1} ({vocab_size - len(ranked) - 1} fewer)."
        )
        wanted = len(ranked)
    kept = ranked[:wanted]
    if not set(keep) <= {word for word, _ in kept}:
        required = [item for item in ranked if item[0] in keep]
        others = [item for item in ranked if item[0] not in keep][: wanted - len(required)]
        position = {word: i for i, (word, _) in enumerate(ranked)}
        kept = sorted(others + required, key=lambda item: position[item[0]])
    words = [word for word, _ in kept] + [unknown]
    vocab = Vocabulary(words, unknown=unknown, start=start, end=end, separator=separator)
    report = VocabularyReport(
        unique_tokens=len(frequencies),
        least_frequent_word=kept[-1][0],
        least_frequent_count=kept[-1][1],
        requested_size=vocab_size,
        size=len(vocab),
        clamp_warning=clamp_warning,
    )
    return vocab, report
