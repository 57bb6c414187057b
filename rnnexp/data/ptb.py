"""Mikolov's Penn Treebank text: one sentence a line, `<unk>` already in, `<eos>` after every line.

The three files ptb.{train,valid,test}.txt, or one PTB-format file split by lines (train first,
then `valid_fraction`, then `test_fraction` of the lines, in file order): given as `dataset.path`,
or as `dataset.fallback_path` when the full corpus is not in the data dir.

Sentence mode: each line is [<eos>, words..., <eos>] (the `<eos>` before it starts it, as in the
usual stream). Stream mode: the stream cut into segments of `segment_length` targets that overlap
by one token, so every token is predicted exactly once either way; `stream()` gives the usual
`w w <eos> w w <eos> ...` sequence (led by one `<eos>`) in both modes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import to_absolute_path

from rnnexp.config.dataset import DatasetConfig
from rnnexp.data.corpus import SPLIT_NAMES, Split
from rnnexp.data.download import PTB
from rnnexp.data.prepared import Prepared, drop_short
from rnnexp.data.sources import configured_path, default_data_dir, locate, read_utf8, require_file
from rnnexp.data.splits import contiguous_labels
from rnnexp.data.vocab import build_vocabulary

log = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"


SINGLE_FILE = "lines"  # the source role of one PTB-format file split by lines


def find_sources(cfg: DatasetConfig) -> dict[str, Path]:
    """The three files (in `dataset.path`, a directory or ptb.train.txt with its siblings, or the data
    dir), or one file to split by lines (`dataset.path` to any other file, or `dataset.fallback_path`)."""
    explicit = configured_path(cfg)
    if explicit is None:
        in_data_dir = {split: default_data_dir(cfg.data_dir) / PTB[split].filename for split in SPLIT_NAMES}
        if cfg.fallback_path is not None and not all(path.is_file() for path in in_data_dir.values()):
            fallback = Path(to_absolute_path(cfg.fallback_path))
            log.warning(
                "the full PTB is not in %s: using %s split by lines (%.0f%% train, %.0f%% valid, %.0f%% test)",
                in_data_dir["train"].parent,
                fallback,
                100 * (1 - cfg.valid_fraction - cfg.test_fraction),
                100 * cfg.valid_fraction,
                100 * cfg.test_fraction,
            )
            return {SINGLE_FILE: require_file(fallback, cfg, "fix dataset.fallback_path")}
        return {split: locate(cfg, PTB[split]) for split in SPLIT_NAMES}
    if explicit.is_dir():
        return {split: locate(cfg, PTB[split], explicit / PTB[split].filename) for split in SPLIT_NAMES}
    if "train" not in explicit.name:
        return {SINGLE_FILE: require_file(explicit, cfg, "give a PTB-format file, or the directory of ptb.*.txt")}
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
    if SINGLE_FILE in sources:
        lines = read_sentences(sources[SINGLE_FILE])
        labels = contiguous_labels(len(lines), cfg.valid_fraction, cfg.test_fraction, "lines")
        sentences = {
            split: [line for line, label in zip(lines, labels) if label == index]
            for index, split in enumerate(SPLIT_NAMES)
        }
    else:
        sentences = {split: read_sentences(path) for split, path in sources.items()}
    warnings = []
    if cfg.min_sentence_tokens:
        for split, lines in sentences.items():
            sentences[split], dropped = drop_short(
                lines,
                cfg.min_sentence_tokens,
                f"{split} sentences",
                f"{sources[split]} has no sentence longer than {cfg.min_sentence_tokens} tokens.",
            )
            warnings += dropped
    if cfg.max_sentences is not None:
        share = min(1.0, cfg.max_sentences / len(sentences["train"]))
        sentences = {split: lines[: math.ceil(len(lines) * share)] for split, lines in sentences.items()}
    vocab, report = build_vocabulary(sentences["train"], cfg.vocab_size, unknown=UNK, keep=(EOS,), start=EOS, end=EOS)
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
