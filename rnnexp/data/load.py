"""`load_corpus`: config -> checked sources -> cached or freshly built corpus, with its log lines."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rnnexp.config.dataset import DatasetConfig, resolve_config
from rnnexp.data import cache, ptb, reddit, synthetic, text
from rnnexp.data.corpus import Corpus
from rnnexp.data.prepared import Prepared
from rnnexp.data.sources import file_sha256

CACHE_FORMAT = 2  # bump when preprocessing changes what the same config produces
DATASETS: dict[str, ModuleType] = {"synthetic": synthetic, "reddit": reddit, "ptb": ptb, "text": text}
LOCATION_FIELDS = ("path", "data_dir", "fallback_path", "download")  # where a file is found, not what it becomes

log = logging.getLogger(__name__)


def load_corpus(
    cfg: DatasetConfig | DictConfig | dict[str, Any], *, seed: int = 0, cache_dir: str | Path | None = None
) -> Corpus:
    """Load the dataset that `cfg` (the `dataset` config node) describes.

    `seed` is the run's seed, used only where the config leaves a dataset seed null. File-based
    datasets are cached under `cache_dir` (default $RNNEXP_CACHE_DIR or ~/.cache/rnnexp); the
    synthetic one is generated each time (it takes well under a second). Every problem with the
    config or the data is a `UserError`; dropped or clamped data is a `UserWarning`.
    """
    started = time.perf_counter()
    config = resolve_config(cfg)
    module = DATASETS[config.name]
    if config.name == "synthetic":
        prepared = module.prepare(config, seed)
        digest = _digest(config, {}, module.key_extras(config, seed))
        corpus, notes, status = _assemble(config, digest, prepared, None), prepared.warnings, "generated"
    else:
        directory = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
        corpus, notes, status = _load_from_files(config, module, seed, directory)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    for line in module.describe(corpus.stats, len(corpus.vocab)):
        log.info(line)
    corpus.stats["cache"] = status
    corpus.stats["load_seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "Dataset %s: %s; loaded in %.2f s (cache: %s), digest %s.",
        config.name,
        ", ".join(f"{name} {len(split)} sentences" for name, split in corpus.splits.items()),
        corpus.stats["load_seconds"],
        status,
        corpus.digest[:12],
    )
    return corpus


def _load_from_files(
    config: DatasetConfig, module: ModuleType, seed: int, directory: Path
) -> tuple[Corpus, list[str], str]:
    """The corpus from the cache, else built from its source files (once, however many jobs ask)."""
    sources = module.find_sources(config)
    hashes = {role: file_sha256(path) for role, path in sources.items()}
    digest = _digest(config, hashes, module.key_extras(config, seed))
    cached = cache.load(directory, config.name, digest)
    if cached is not None:
        return *cached, "hit"
    with cache.build_lock(directory, config.name, digest):
        cached = cache.load(directory, config.name, digest)  # another job may have built it meanwhile
        if cached is not None:
            return *cached, "hit"
        prepared = module.prepare(config, sources)
        source = ", ".join(str(path) for path in sources.values())
        corpus = _assemble(config, digest, prepared, source)
        _store(directory, corpus, prepared.warnings)
        return corpus, prepared.warnings, "miss"


def _digest(config: DatasetConfig, source_hashes: dict[str, str], extras: dict[str, Any]) -> str:
    """sha256 over the source bytes' hashes and every setting that changes the tokens."""
    settings = dataclasses.asdict(config)
    for key in LOCATION_FIELDS:
        settings.pop(key)
    if config.name != "synthetic":
        settings.pop("synthetic")
    identity = {"format": CACHE_FORMAT, "sources": source_hashes, "settings": settings, "extras": extras}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def _assemble(config: DatasetConfig, digest: str, prepared: Prepared, source: str | None) -> Corpus:
    """The corpus with per-split counts added to the dataset's own statistics."""
    vocab = prepared.vocab
    stats = dict(prepared.stats)
    for name, split in prepared.splits.items():
        stats[f"{name}.sentences"] = len(split)
        stats[f"{name}.targets"] = split.n_targets
        if vocab.unknown_id is not None and split.sentences:
            stats[f"{name}.unknown_fraction"] = float(np.mean(split.stream() == vocab.unknown_id))
    params = {**prepared.params, "dataset.effective_vocab_size": str(len(vocab))}
    return Corpus(config.name, vocab, prepared.splits, digest, params, stats, source)


def _store(directory: Path, corpus: Corpus, notes: list[str]) -> None:
    """Cache the corpus; a cache that cannot be written only costs the next run time."""
    try:
        cache.save(directory, corpus, notes)
    except OSError as error:
        warnings.warn(f"Could not cache the {corpus.name} dataset in {directory} ({error}).", UserWarning, stacklevel=3)
