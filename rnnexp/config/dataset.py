"""The `dataset` config node: one schema for all four datasets, checked before any data is read.

`DatasetConfig` doubles as the Hydra structured-config schema of the `dataset` group, so it must
stay importable without side effects. Fields a dataset does not use are ignored by it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.errors import UserError

DATASET_NAMES = ("synthetic", "reddit", "ptb", "text")
MIN_VOCAB_SIZE = 4  # sentence start, sentence end, unknown, and at least one word


@dataclass
class SyntheticConfig:
    """Knobs of the embedded artificial language (see `rnnexp.data.synthetic`)."""

    n_sentences: int = 4000  # sentences generated before the split
    min_words: int = 4  # words per sentence, boundary tokens excluded
    max_words: int = 18
    mean_words: float = 9.0  # expected words per sentence (geometric tail past min_words)
    n_classes: int = 12  # word classes of the grammar
    successors: int = 3  # classes that may follow each class (sparsity of the grammar)
    zipf_exponent: float = 1.0  # skew of word frequencies inside a class
    distance: int = 0  # 0 = off; else the sentence's first word fixes the word `distance` later
    n_keys: int = 4  # distinct first words (each with its own echo word) when distance > 0
    # null: the key is the first word, and sentences are stretched to hold its echo (min_words >= distance + 1);
    # n: the key is word 1..n, uniformly, and sentence lengths follow min/mean/max_words whatever the distance
    key_positions: int | None = None
    seed: int | None = 0  # the language and its sample; None = the run's seed


@dataclass
class DatasetConfig:
    """Everything that decides which tokens a run trains and evaluates on."""

    name: str = "synthetic"  # synthetic | reddit | ptb | text
    path: str | None = None  # the source file (ptb: its directory or ptb.train.txt)
    data_dir: str | None = None  # where sources are looked for / downloaded; env RNNEXP_DATA_DIR
    fallback_path: str | None = None  # ptb: one PTB-format file split by lines when the full corpus is absent
    vocab_size: int = 256  # words kept, UNKNOWN_TOKEN included (synthetic: the language's size)
    valid_fraction: float = 0.1  # of comments (reddit), lines (text), sentences (synthetic)
    test_fraction: float = 0.1  # 0 and 0: train on everything, like the tutorial
    split_seed: int = 0  # which comments go to which split (reddit)
    max_sentences: int | None = None  # keep only the first ones, to shrink runs
    min_sentence_tokens: int = 0  # drop sentences with this many tokens or fewer (boundaries counted)
    lowercase: bool = False  # reddit (the tutorial lower-cases) and text
    level: str = "word"  # text: word | char
    mode: str = "sentence"  # ptb: sentence (one line each) | stream (fixed-length sequences)
    stream_sequence_length: int = 35  # ptb stream mode: the running text cut into sequences of this many targets
    download: bool = True  # fetch a missing reddit file from the tutorial's repository
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


def resolve_config(cfg: DatasetConfig | DictConfig | dict[str, Any]) -> DatasetConfig:
    """Turn the `dataset` node (dataclass, DictConfig or dict) into a checked `DatasetConfig`."""
    if isinstance(cfg, DatasetConfig):
        resolved = dataclasses.replace(cfg, synthetic=dataclasses.replace(cfg.synthetic))
    else:
        try:
            plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
            merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), plain)
            resolved = cast(DatasetConfig, OmegaConf.to_object(merged))
        except OmegaConfBaseException as error:
            message = str(error).splitlines()[0]
            raise UserError(f"Bad dataset config: {message}; check the dataset.* overrides.") from None
    validate(resolved)
    return resolved


def validate(cfg: DatasetConfig) -> None:
    """Reject impossible values with one sentence each, before any file is read."""
    if cfg.name not in DATASET_NAMES:
        raise UserError(f"dataset.name={cfg.name!r} is not one of {', '.join(DATASET_NAMES)}.")
    if cfg.vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"dataset.vocab_size={cfg.vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} "
            "(sentence start, sentence end, unknown and one word)."
        )
    for key in ("valid_fraction", "test_fraction"):
        value = getattr(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise UserError(f"dataset.{key}={value} must be between 0 and 1.")
    total = cfg.valid_fraction + cfg.test_fraction
    if total > 1.0:
        raise UserError(f"dataset.valid_fraction + dataset.test_fraction = {total:g} must sum to at most 1.")
    if total >= 1.0:
        raise UserError(
            "dataset.valid_fraction + dataset.test_fraction = 1 leaves no training data; lower one of them."
        )
    if cfg.max_sentences is not None and cfg.max_sentences < 1:
        raise UserError(f"dataset.max_sentences={cfg.max_sentences} must be at least 1 (or null).")
    if cfg.min_sentence_tokens < 0:
        raise UserError(f"dataset.min_sentence_tokens={cfg.min_sentence_tokens} must be 0 or more.")
    if cfg.level not in ("word", "char"):
        raise UserError(f"dataset.level={cfg.level!r} must be word or char.")
    if cfg.mode not in ("sentence", "stream"):
        raise UserError(f"dataset.mode={cfg.mode!r} must be sentence or stream.")
    if cfg.stream_sequence_length < 1:
        raise UserError(f"dataset.stream_sequence_length={cfg.stream_sequence_length} must be at least 1.")
    if cfg.name == "synthetic":
        validate_synthetic(cfg.synthetic)


def validate_synthetic(cfg: SyntheticConfig) -> None:
    """The generator's knobs must describe a language that can exist."""
    if cfg.n_sentences < 1:
        raise UserError(f"dataset.synthetic.n_sentences={cfg.n_sentences} must be at least 1.")
    if not 1 <= cfg.min_words <= cfg.max_words:
        raise UserError(
            f"dataset.synthetic.min_words={cfg.min_words} and max_words={cfg.max_words} "
            "need 1 <= min_words <= max_words."
        )
    if not cfg.min_words <= cfg.mean_words <= cfg.max_words:
        raise UserError(
            f"dataset.synthetic.mean_words={cfg.mean_words} must lie between min_words "
            f"({cfg.min_words}) and max_words ({cfg.max_words})."
        )
    if cfg.n_classes < 1 or cfg.successors < 1:
        raise UserError("dataset.synthetic.n_classes and successors must be at least 1.")
    if cfg.zipf_exponent < 0:
        raise UserError(f"dataset.synthetic.zipf_exponent={cfg.zipf_exponent} must be 0 or more.")
    if cfg.distance < 0:
        raise UserError(f"dataset.synthetic.distance={cfg.distance} must be 0 (off) or more.")
    if cfg.distance and cfg.distance + 1 > cfg.max_words:
        raise UserError(
            f"dataset.synthetic.distance={cfg.distance} needs sentences of at least "
            f"{cfg.distance + 1} words, but max_words={cfg.max_words}; raise max_words."
        )
    if cfg.key_positions is not None and cfg.key_positions < 1:
        raise UserError(f"dataset.synthetic.key_positions={cfg.key_positions} must be at least 1 (or null).")
    if cfg.distance and cfg.key_positions is not None and cfg.key_positions + cfg.distance > cfg.min_words:
        raise UserError(
            f"dataset.synthetic.key_positions={cfg.key_positions} with distance={cfg.distance} needs sentences of "
            f"at least {cfg.key_positions + cfg.distance} words, but min_words={cfg.min_words}; raise min_words."
        )
    if cfg.distance and cfg.n_keys < 2:
        raise UserError(f"dataset.synthetic.n_keys={cfg.n_keys} must be at least 2.")
