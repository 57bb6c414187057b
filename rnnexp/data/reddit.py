"""The WildML tutorial's data: reddit comments -> sentences -> word tokens -> a frequent-word vocabulary.

Follows the tutorial's `train-theano.py` step by step: read the `body` column, lower-case, split
comments into sentences with nltk, wrap each as "SENTENCE_START <sentence> SENTENCE_END", tokenise
that with nltk, keep the `vocab_size - 1` most frequent tokens and map the rest to UNKNOWN_TOKEN.
Added, as the project asks: sentences of `min_sentence_tokens` tokens or fewer are dropped, and
train / valid / test are split by comment (fractions 0 and 0 train on everything, as the tutorial).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from rnnexp.config.dataset import DatasetConfig
from rnnexp.data.download import REDDIT
from rnnexp.data.prepared import Prepared, encode_splits, training_sentences
from rnnexp.data.sources import configured_path, locate, read_utf8
from rnnexp.data.splits import random_labels
from rnnexp.data.vocab import SENTENCE_END, SENTENCE_START, build_vocabulary
from rnnexp.errors import UserError

BODY_COLUMN = "body"
Tokenizer = Callable[[str], list[str]]


def find_sources(cfg: DatasetConfig) -> dict[str, Path]:
    return {"comments": locate(cfg, REDDIT, configured_path(cfg))}


def key_extras(cfg: DatasetConfig, seed: int) -> dict[str, Any]:
    """What outside the config changes the tokens: the nltk version and whether punkt_tab is there."""
    return {"punkt_tab": punkt_tab_installed(), "nltk": version("nltk")}


def punkt_tab_installed() -> bool:
    """Whether nltk has its pretrained English Punkt model, without importing nltk (~2.5 s).

    Once nltk is imported, nltk answers itself; before, its default data directories
    (NLTK_DATA, ~/nltk_data, the system locations in nltk.data.path) are looked at directly.
    """
    if "nltk" in sys.modules:
        from nltk.tokenize import punkt_model_available

        return punkt_model_available()
    roots = [os.path.expanduser(d) for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    roots.append(os.path.expanduser("~/nltk_data"))
    roots += [os.path.join(sys.prefix, *parts, "nltk_data") for parts in ((), ("share",), ("lib",))]
    roots += ["/usr/share/nltk_data", "/usr/local/share/nltk_data", "/usr/lib/nltk_data", "/usr/local/lib/nltk_data"]
    return any(
        Path(root, "tokenizers", "punkt_tab", "english").is_dir() or Path(root, "tokenizers", "punkt_tab.zip").is_file()
        for root in roots
    )


def read_comments(text: str, path: Path) -> tuple[list[str], list[str]]:
    """The `body` column, as the tutorial's csv.reader(skipinitialspace=True) reads it.

    A last record cut inside a quoted field (as in the shared excerpt) is dropped with a warning.
    """
    lines = list(io.StringIO(text, newline=""))
    reader = csv.reader(lines, skipinitialspace=True)
    header = next(reader, [])
    if BODY_COLUMN not in header:
        raise UserError(
            f"{path} has no {BODY_COLUMN!r} column (its header is {','.join(header)[:80]!r}); the "
            "reddit dataset reads the tutorial's CSV, whose first line is 'body'."
        )
    column = header.index(BODY_COLUMN)
    comments, first_lines = [], []
    line_before = reader.line_num
    try:
        for row in reader:
            if len(row) > column:
                comments.append(row[column])
                first_lines.append(line_before + 1)
            line_before = reader.line_num
    except csv.Error as error:
        where = f"line {line_before + 1}"
        raise UserError(f"{path} is not valid CSV at {where} ({error}); fix or replace the file.") from None
    if not comments:
        raise UserError(f"{path} has no comments under its {BODY_COLUMN!r} header; it needs at least one.")
    warnings = []
    if _ends_inside_quotes(lines[first_lines[-1] - 1 :]):
        dropped = comments.pop()
        warnings.append(
            f"{path} ends inside a quoted field: dropped the incomplete last comment "
            f"(line {first_lines[-1]} to the end, {len(dropped)} characters) and kept the "
            f"{len(comments)} complete ones."
        )
    return comments, warnings


def _ends_inside_quotes(record_lines: list[str]) -> bool:
    """Whether these lines (one CSV record) stop before its quoted field closes."""
    try:
        list(csv.reader(record_lines, skipinitialspace=True, strict=True))
    except csv.Error as error:
        return "unexpected end of data" in str(error)
    return False


def tokenizers(comments: list[str]) -> tuple[Tokenizer, Tokenizer, dict[str, str]]:
    """A sentence splitter and a sentence -> wrapped tokens function, and their names.

    With nltk's pretrained punkt_tab this is the tutorial's code: `nltk.sent_tokenize`, then
    `nltk.word_tokenize("SENTENCE_START <sentence> SENTENCE_END")`. Without it, Punkt is trained on
    these comments, and the sentence alone goes through the word tokenizer inside
    `nltk.word_tokenize` (which needs no data) before being wrapped: the same tokens whenever
    Punkt splits the wrapped text before SENTENCE_END, and half the work.
    """
    import nltk  # here, not at the top: importing nltk takes ~2.5 s, which a cache hit skips
    from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer, punkt_model_available
    from nltk.tokenize.punkt import PunktTrainer

    if punkt_model_available():
        names = {"sentence_tokenizer": "punkt_tab", "word_tokenizer": "nltk.word_tokenize"}

        def tutorial_tokens(sentence: str) -> list[str]:
            return nltk.word_tokenize(f"{SENTENCE_START} {sentence} {SENTENCE_END}")

        return nltk.sent_tokenize, tutorial_tokens, names
    trainer = PunktTrainer()
    trainer.train("\n\n".join(comments), finalize=True)
    split_words = NLTKWordTokenizer().tokenize

    def wrapped_tokens(sentence: str) -> list[str]:
        return [SENTENCE_START, *split_words(sentence), SENTENCE_END]

    names = {"sentence_tokenizer": "punkt_trained_on_corpus", "word_tokenizer": "NLTKWordTokenizer"}
    return PunktSentenceTokenizer(trainer.get_params()).tokenize, wrapped_tokens, names


def tokenize_comments(
    comments: list[str], min_tokens: int
) -> tuple[list[list[str]], list[int], dict[str, Any], dict[str, str]]:
    """Wrapped, word-tokenised sentences, the comment each came from, counts, and tokenizer names."""
    split_sentences, sentence_tokens, names = tokenizers(comments)
    sentences, comment_ids = [], []
    parsed = 0
    for comment_id, comment in enumerate(comments):
        for sentence in split_sentences(comment):
            parsed += 1
            tokens = sentence_tokens(sentence)
            if len(tokens) > min_tokens:
                sentences.append(tokens)
                comment_ids.append(comment_id)
    counts = {"sentences_parsed": parsed, "sentences_dropped_short": parsed - len(sentences)}
    return sentences, comment_ids, counts, names


def prepare(cfg: DatasetConfig, sources: dict[str, Path]) -> Prepared:
    path = sources["comments"]
    comments, warnings = read_comments(read_utf8(path), path)
    if cfg.lowercase:
        comments = [comment.lower() for comment in comments]
    sentences, comment_ids, stats, names = tokenize_comments(comments, cfg.min_sentence_tokens)
    if stats["sentences_dropped_short"]:
        warnings.append(
            f"Dropped {stats['sentences_dropped_short']} of {stats['sentences_parsed']} sentences "
            f"with {cfg.min_sentence_tokens} tokens or fewer (dataset.min_sentence_tokens)."
        )
    if not sentences:
        raise UserError(
            f"{path} has no usable sentence: all {stats['sentences_parsed']} have {cfg.min_sentence_tokens} "
            "tokens or fewer (dataset.min_sentence_tokens)."
        )
    if cfg.max_sentences is not None:
        sentences, comment_ids = sentences[: cfg.max_sentences], comment_ids[: cfg.max_sentences]
    comment_numbers, comment_index = np.unique(comment_ids, return_inverse=True)
    comment_labels = random_labels(
        len(comment_numbers), cfg.valid_fraction, cfg.test_fraction, cfg.split_seed, "comments"
    )
    labels = comment_labels[comment_index]
    vocab, report = build_vocabulary(
        training_sentences(sentences, labels),
        cfg.vocab_size,
        keep=(SENTENCE_START, SENTENCE_END),
        start=SENTENCE_START,
        end=SENTENCE_END,
    )
    if report.clamp_warning:
        warnings.append(report.clamp_warning)
    stats.update(
        comments=len(comments),
        comments_used=len(comment_numbers),
        unique_tokens=report.unique_tokens,
        least_frequent_word=report.least_frequent_word,
        least_frequent_count=report.least_frequent_count,
    )
    return Prepared(
        vocab=vocab,
        splits=encode_splits(vocab, sentences, labels),
        params={f"dataset.{key}": value for key, value in names.items()},
        stats=stats,
        warnings=warnings,
    )


def describe(stats: dict[str, Any], vocab_size: int) -> list[str]:
    """The tutorial's printout."""
    return [
        f"Parsed {stats['sentences_parsed']} sentences.",
        f"Found {stats['unique_tokens']} unique words tokens.",
        f"Using vocabulary size {vocab_size}.",
        f"The least frequent word in our vocabulary is '{stats['least_frequent_word']}' and "
        f"appeared {stats['least_frequent_count']} times.",
    ]
