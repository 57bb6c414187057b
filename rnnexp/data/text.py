"""Any plain UTF-8 text file, at word or character level; every non-blank line is one sentence.

Words are nltk's data-free `wordpunct_tokenize` tokens (runs of letters/digits, runs of
punctuation); characters are the line's characters, indentation included. The split is
contiguous (train, then valid, then test, in file order) so passages stay whole, as in char-rnn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnexp.config.dataset import DatasetConfig
from rnnexp.data.prepared import Prepared, drop_short, encode_splits, training_sentences
from rnnexp.data.sources import configured_path, read_utf8, require_file
from rnnexp.data.splits import contiguous_labels
from rnnexp.data.vocab import SENTENCE_END, SENTENCE_START, build_vocabulary
from rnnexp.errors import UserError


def find_sources(cfg: DatasetConfig) -> dict[str, Path]:
    path = configured_path(cfg)
    if path is None:
        raise UserError(
            "dataset=text needs dataset.path, the text file to read "
            "(for example dataset.path=../shared/data/tinyshakespeare.txt)."
        )
    return {"text": require_file(path, cfg, "point it at a plain text file")}


def key_extras(cfg: DatasetConfig, seed: int) -> dict[str, Any]:
    return {}


def tokenize_lines(text: str, level: str, lowercase: bool) -> list[list[str]]:
    """Wrapped token lists, one per non-blank line."""
    from nltk.tokenize import wordpunct_tokenize  # importing nltk takes ~2.5 s; a cache hit skips it

    if lowercase:
        text = text.lower()
    split = wordpunct_tokenize if level == "word" else list
    return [[SENTENCE_START, *split(line), SENTENCE_END] for line in text.splitlines() if line.strip()]


def prepare(cfg: DatasetConfig, sources: dict[str, Path]) -> Prepared:
    path = sources["text"]
    lines = tokenize_lines(read_utf8(path), cfg.level, cfg.lowercase)
    sentences, warnings = drop_short(
        lines,
        cfg.min_sentence_tokens,
        "lines",
        f"{path} has no usable line (none longer than {cfg.min_sentence_tokens} tokens).",
    )
    sentences = sentences[: cfg.max_sentences]
    labels = contiguous_labels(len(sentences), cfg.valid_fraction, cfg.test_fraction, "lines")
    vocab, report = build_vocabulary(
        training_sentences(sentences, labels),
        cfg.vocab_size,
        keep=(SENTENCE_START, SENTENCE_END),
        start=SENTENCE_START,
        end=SENTENCE_END,
        separator=" " if cfg.level == "word" else "",
    )
    if report.clamp_warning:
        warnings.append(report.clamp_warning)
    stats = {
        "lines": len(lines),
        "unique_tokens": report.unique_tokens,
        "least_frequent_word": report.least_frequent_word,
        "least_frequent_count": report.least_frequent_count,
    }
    tokenizer = "wordpunct_tokenize" if cfg.level == "word" else "characters"
    splits = encode_splits(vocab, sentences, labels)
    return Prepared(vocab, splits, {"dataset.word_tokenizer": tokenizer}, stats, warnings)


def describe(stats: dict[str, Any], vocab_size: int) -> list[str]:
    return [
        f"Text: {stats['lines']} lines, {stats['unique_tokens']} distinct training tokens, "
        f"vocabulary size {vocab_size}."
    ]
