"""Claim 1: the tutorial's data statistics (sentences, distinct tokens, rarest vocabulary word)."""

from __future__ import annotations

from pathlib import Path

import nltk

from experiments.tutorial import published
from experiments.tutorial.result import CONSISTENT, NEEDS_FULL_DATA, REPRODUCED, ClaimResult, markdown_table
from rnnexp.data import Corpus


def is_full_file(path: Path) -> bool:
    """The complete tutorial CSV (by size: the excerpt is its first 112 kB)."""
    return path.stat().st_size == published.FULL_CSV_BYTES


def sentence_words(corpus: Corpus, index: int) -> str:
    return " ".join(corpus.vocab.words[i] for i in corpus.splits["train"].sentences[index][:-1])


def data_statistics(corpus: Corpus, source: Path, command: str) -> ClaimResult:
    stats, vocab_size = corpus.stats, len(corpus.vocab)
    full = is_full_file(source)
    splitter = corpus.params.get("dataset.sentence_tokenizer", "?")
    example = sentence_words(corpus, published.EXAMPLE_INDEX)
    timed_length = len(corpus.splits["train"].sentences[published.TIMED_SENTENCE_INDEX]) - 1
    rows = [
        ["sentences parsed", f"{published.SENTENCES_PARSED:,}", f"{stats['sentences_parsed']:,}"],
        ["unique word tokens", f"{published.UNIQUE_WORD_TOKENS:,}", f"{stats['unique_tokens']:,}"],
        ["vocabulary size", f"{published.VOCABULARY_SIZE:,}", f"{vocab_size:,}"],
        [
            "least frequent vocabulary word",
            f"'{published.LEAST_FREQUENT_WORD}', {published.LEAST_FREQUENT_COUNT} times",
            f"'{stats['least_frequent_word']}', {stats['least_frequent_count']} times",
        ],
        [f"X_train[{published.EXAMPLE_INDEX}]", published.EXAMPLE_SENTENCE, example],
        [f"length of X_train[{published.TIMED_SENTENCE_INDEX}]", published.TIMED_SENTENCE_LENGTH, timed_length],
    ]
    same_text = example == published.EXAMPLE_SENTENCE and timed_length == published.TIMED_SENTENCE_LENGTH
    text_note = (
        "the first sentences come out word for word as the tutorial's (X_train[17] and the 45 words of "
        "X_train[10] match)"
        if same_text
        else "the tutorial's X_train[17] and X_train[10] come out otherwise"
    )
    tools = (
        f"nltk {nltk.__version__}, sentence splitter {splitter} "
        "(the tutorial: nltk 3.0 with its pretrained punkt model)"
    )
    if full:
        counts = (stats["sentences_parsed"], stats["unique_tokens"])
        verdict = REPRODUCED if counts == (published.SENTENCES_PARSED, published.UNIQUE_WORD_TOKENS) else CONSISTENT
        reason = f"{tools}; {text_note}."
    else:
        size = source.stat().st_size
        scale = published.FULL_CSV_BYTES / size
        verdict = NEEDS_FULL_DATA
        reason = (
            f"only the excerpt {source.name} ({size:,} bytes, {stats['comments']} complete comments, 1/{scale:.0f} of "
            "the file) is available offline, so the counts are of the excerpt and the vocabulary is clamped to its "
            f"{vocab_size:,} words (every word; no UNKNOWN_TOKEN occurs). Scaled by bytes the full file would give "
            f"about {stats['sentences_parsed'] * scale:,.0f} sentences (published {published.SENTENCES_PARSED:,}). "
            f"{text_note[0].upper()}{text_note[1:]}; {tools}."
        )
    return ClaimResult(
        number=1,
        source=published.WILDML,
        title="Data: sentences, distinct words, the rarest vocabulary word (vocabulary 8000)",
        published=(
            f"{published.SENTENCES_PARSED:,} sentences, {published.UNIQUE_WORD_TOKENS:,} unique tokens, "
            f"'{published.LEAST_FREQUENT_WORD}' {published.LEAST_FREQUENT_COUNT}×"
        ),
        reproduced=(
            f"{stats['sentences_parsed']:,} sentences, {stats['unique_tokens']:,} unique tokens, "
            f"'{stats['least_frequent_word']}' {stats['least_frequent_count']}×, V={vocab_size:,}"
        ),
        verdict=verdict,
        reason=reason,
        command=command,
        details=[markdown_table(["", "published (full CSV)", f"reproduced ({source.name})"], rows)],
        metrics={
            "sentences_parsed": stats["sentences_parsed"],
            "unique_tokens": stats["unique_tokens"],
            "least_frequent_count": stats["least_frequent_count"],
            "vocab_size_effective": vocab_size,
            "train_sentences": len(corpus.splits["train"]),
        },
        params={
            "source": str(source),
            "full_file": str(full),
            "sentence_tokenizer": splitter,
            "nltk": nltk.__version__,
            "least_frequent_word": str(stats["least_frequent_word"]),
        },
    )
