"""Mikolov's Penn Treebank text: one sentence a line, `<unk>` already in, `<eos>` after every line.

Sentence mode: each line is [<eos>, words..., <eos>] (the `<eos>` before it starts it, as in the
usual stream). Stream mode: the stream cut into segments of `segment_length` targets that overlap
by one token, so every token is predicted exactly once either way; `stream()` gives the usual
`w w <eos> w w <eos> ...` sequence (led by one `<eos>`) in both modes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from rnnexp.config.dataset import DatasetConfig
from rnnexp.data.corpus import SPLIT_NAMES, Split
from rnnexp.data.download import PTB
from rnnexp.data.prepared import Prepared, drop_short
from rnnexp.data.sources import configured_path, locate, read_utf8
from rnnexp.data.vocab import build_vocabulary
from rnnexp.errors import UserError

EOS = "<eos>"
UNK = "<unk>"


def find_sources(cfg: DatasetConfig) -> dict[str, Path]:
    """The three files: in `dataset.path` (a directory, or ptb.train.txt with its siblings) or the data dir."""
    explicit = configured_path(cfg)
    if explicit is None:
        return {split: locate(cfg, PTB[split]) for split in SPLIT_NAMES}
    if explicit.is_dir():
        return {split: locate(cfg, PTB[split], explicit / PTB[split].filename) for split in SPLIT_NAMES}
    if "train" not in explicit.name:
        raise UserError(
            f"dataset.path={cfg.path} must be a directory holding ptb.train.txt, ptb.valid.txt and "
            "ptb.test.txt, or the ptb.train.txt file itself."
        )
    return {
        split: locate(cfg, PTB[split], explicit.with_name(explicit.name.replace("train", split)))
        for split in SPLIT_NAMES
    }


def key_extras(cfg: DatasetConfig, seed: int) -> dict[str, Any]:
    return {}


def read_sentences(path: Path) -> list[list[str]]:
    """One [<eos>, words..., <eos>] list per non-blank line."""
    return [[EOS, *line.split(), EOS] for line in read_utf8(path).splitlines() if line.strip()]


def prepare(cfg: DatasetConfig, sources: dict[str, Path]) -> Prepared:
    sentences = {split: read_sentences(path) for split, path in sources.items()}
    warnings = []
    if cfg.min_sentence_tokens:
        for split, lines in sentences.items():
            sentences[split], dropped = drop_short(
                lines, cfg.min_sentence_tokens, f"{split} sentences",
                f"{sources[split]} has no sentence longer than {cfg.min_sentence_tokens} tokens.",
            )
            warnings += dropped
    if cfg.max_sentences is not None:
        share = min(1.0, cfg.max_sentences / len(sentences["train"]))
        sentences = {split: lines[: math.ceil(len(lines) * share)] for split, lines in sentences.items()}
    vocab, report = build_vocabulary(
        sentences["train"], cfg.vocab_size, unknown=UNK, keep=(EOS,), start=EOS, end=EOS
    )
    if report.clamp_warning:
        warnings.append(report.clamp_warning)
    splits = {}
    for split, lines in sentences.items():
        encoded = Split([vocab.encode(line) for line in lines], shared_boundary=True)
        splits[split] = segments(encoded.stream(), cfg.segment_length) if cfg.mode == "stream" else encoded
    stats = {
        "unique_tokens": report.unique_tokens,
        "least_frequent_word": report.least_frequent_word,
        "least_frequent_count": report.least_frequent_count,
        **{f"{split}.lines": len(lines) for split, lines in sentences.items()},
    }
    return Prepared(vocab, splits, {"dataset.word_tokenizer": "whitespace"}, stats, warnings)


def segments(stream: np.ndarray, length: int) -> Split:
    """Pieces of `length` targets, each starting with the previous piece's last token."""
    starts = range(0, len(stream) - 1, length)
    return Split([stream[start : start + length + 1] for start in starts], shared_boundary=True)


def describe(stats: dict[str, Any], vocab_size: int) -> list[str]:
    return [
        f"PTB lines: {stats['train.lines']} train, {stats['valid.lines']} valid, {stats['test.lines']} test; "
        f"{stats['unique_tokens']} distinct training tokens, vocabulary size {vocab_size}."
    ]
