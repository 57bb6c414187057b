"""Mikolov's Penn Treebank text: one sentence a line, `<unk>` already in, `<eos>` after every line.

The three files ptb.{train,valid,test}.txt, or one PTB-format file split by lines (train first,
then `valid_fraction`, then `test_fraction` of the lines, in file order): given as `dataset.path`,
or as `dataset.fallback_path` when none of the three is in the data dir. The data dir is
`dataset.data_dir`, else $RNNEXP_DATA_DIR, else the project's `data/` if it holds ptb.train.txt,
else `../shared/data` beside the project. Each file is checked against the benchmark's sha256: a
different file is read with a warning, and the corpus says it is not the standard benchmark.

Sentence mode: each line is [<eos>, words..., <eos>] (the `<eos>` before it starts it, as in the
usual stream). Stream mode: the stream cut into sequences of `stream_sequence_length` targets that overlap
by one token, so every token is predicted exactly once either way; `stream()` gives the usual
`w w <eos> w w <eos> ...` sequence (led by one `<eos>`) in both modes.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import to_absolute_path

from rnnexp.config.dataset import DatasetConfig
from rnnexp.data.corpus import SPLIT_NAMES, Split
from rnnexp.data.download import PTB
from rnnexp.data.prepared import Prepared, drop_short
from rnnexp.data.sources import (
    DATA_DIR_ENV,
    PROJECT_ROOT,
    configured_path,
    default_data_dir,
    file_sha256,
    locate,
    read_utf8,
    require_file,
)
from rnnexp.data.splits import contiguous_labels
from rnnexp.data.vocab import build_vocabulary
from rnnexp.errors import UserError

log = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"


SINGLE_FILE = "lines"  # the source role of one PTB-format file split by lines
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
# Mikolov's files as published (../shared/data/README.md): the only data the literature's figures are on
STANDARD_SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
STANDARD_VOCAB_SIZE = 10_000  # the training split's types, <eos> and <unk> included


def data_dir(cfg: DatasetConfig) -> Path:
    """Where the three files are looked for when `dataset.path` is not given."""
    if cfg.data_dir or os.environ.get(DATA_DIR_ENV):
        return default_data_dir(cfg.data_dir)
    project = default_data_dir()
    return project if (project / PTB["train"].filename).is_file() else SHARED_DATA_DIR


def find_sources(cfg: DatasetConfig) -> dict[str, Path]:
    """The three files (in `dataset.path`, a directory or ptb.train.txt with its siblings, or the data
    dir), or one file to split by lines (`dataset.path` to any other file, or `dataset.fallback_path`)."""
    explicit = configured_path(cfg)
    if explicit is None:
        in_data_dir = {split: data_dir(cfg) / PTB[split].filename for split in SPLIT_NAMES}
        # only when none is there: one file of three missing is an error naming it, not a silent fallback
        if cfg.fallback_path is not None and not any(path.is_file() for path in in_data_dir.values()):
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
        for split, path in in_data_dir.items():
            if not path.is_file():
                raise UserError(
                    f"{path.name} is not at {path}; get it from {PTB[split].where} and put it there "
                    f"(or set dataset.path or {DATA_DIR_ENV})."
                )
        return in_data_dir
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
        splits[split] = segments(encoded.stream(), cfg.stream_sequence_length) if cfg.mode == "stream" else encoded
    benchmark, differences = benchmark_check(cfg, sources, len(vocab))
    stats = {
        "unique_tokens": report.unique_tokens,
        "least_frequent_word": report.least_frequent_word,
        "least_frequent_count": report.least_frequent_count,
        **{f"{split}.lines": len(lines) for split, lines in sentences.items()},
        **benchmark,
    }
    params = {"dataset.word_tokenizer": "whitespace", "dataset.standard_benchmark": str(not differences).lower()}
    return Prepared(vocab, splits, params, stats, warnings + differences)


def benchmark_check(cfg: DatasetConfig, sources: dict[str, Path], vocab_size: int) -> tuple[dict[str, Any], list[str]]:
    """Each file's sha256, whether these tokens are the standard benchmark, and a sentence saying which
    data this is; plus one warning per way they differ from it (a file's digest names the expected one)."""
    digests = {role: file_sha256(path) for role, path in sources.items()}
    reasons = []
    if SINGLE_FILE in sources:
        train = 100 * (1 - cfg.valid_fraction - cfg.test_fraction)
        reasons.append(
            f"{sources[SINGLE_FILE]} split by lines ({train:.0f}/{100 * cfg.valid_fraction:.0f}/"
            f"{100 * cfg.test_fraction:.0f}) stands in for the three files"
        )
    for role, digest in digests.items():
        if role in STANDARD_SHA256 and digest != STANDARD_SHA256[role]:
            reasons.append(
                f"{sources[role]} has sha256 {digest}, not the standard ptb.{role}.txt's {STANDARD_SHA256[role]}"
            )
    if cfg.max_sentences is not None or cfg.min_sentence_tokens:
        reasons.append("dataset.max_sentences or dataset.min_sentence_tokens cut the files")
    if SINGLE_FILE not in sources and vocab_size != STANDARD_VOCAB_SIZE:
        reasons.append(f"the vocabulary has {vocab_size} words, not the benchmark's {STANDARD_VOCAB_SIZE}")
    note = (
        "The standard Penn Treebank benchmark (Mikolov's ptb.{train,valid,test}.txt, sha256 verified)."
        if not reasons
        else f"NOT the standard Penn Treebank benchmark: {'; '.join(reasons)}."
    )
    stats = {"standard_benchmark": not reasons, "benchmark": note, **{f"{r}.sha256": d for r, d in digests.items()}}
    warnings = [
        f"{reason}: not the standard PTB benchmark, not comparable with published perplexities." for reason in reasons
    ]
    return stats, warnings


def segments(stream: np.ndarray, length: int) -> Split:
    """Pieces of `length` targets, each starting with the previous piece's last token."""
    starts = range(0, len(stream) - 1, length)
    return Split([stream[start : start + length + 1] for start in starts], shared_boundary=True)


def describe(stats: dict[str, Any], vocab_size: int) -> list[str]:
    return [
        f"PTB lines: {stats['train.lines']} train, {stats['valid.lines']} valid, {stats['test.lines']} test; "
        f"{stats['unique_tokens']} distinct training tokens, vocabulary size {vocab_size}."
    ]
