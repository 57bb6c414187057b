"""Preprocessed corpora on disk: one .npz (token arrays) and one .json (vocabulary, stats), no pickle.

Entries are named by a key over the source bytes and the preprocessing config, so a changed file
or setting misses. Both files are written atomically, and parallel sweep jobs that miss the same
entry take turns (`build_lock`): the first builds it, the others then load it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rnnexp.data.corpus import SPLIT_NAMES, Corpus, Split
from rnnexp.data.download import write_atomically
from rnnexp.data.vocab import Vocabulary

log = logging.getLogger(__name__)
CACHE_DIR_ENV = "RNNEXP_CACHE_DIR"


def default_cache_dir() -> Path:
    """$RNNEXP_CACHE_DIR, else ~/.cache/rnnexp."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "rnnexp")


def entry_paths(cache_dir: Path, name: str, key: str) -> tuple[Path, Path]:
    stem = cache_dir / f"{name}-{key[:24]}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


@contextlib.contextmanager
def build_lock(cache_dir: Path, name: str, key: str) -> Iterator[None]:
    """Hold an exclusive lock on the entry while building it; no lock where none can be taken.

    Callers re-check the cache once they hold it, so jobs that raced on a miss build only once.
    """
    lock_path = entry_paths(cache_dir, name, key)[0].with_suffix(".lock")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(lock_path, "a")  # noqa: SIM115 - held across the yield
    except OSError:
        yield
        return
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:  # still locked: a waiter re-checks the entry, a newcomer finds it already saved
            lock_path.unlink(missing_ok=True)


def save(cache_dir: Path, corpus: Corpus, warnings: list[str]) -> None:
    """Store `corpus` (no oracle arrays) under its digest; `warnings` are repeated on load."""
    arrays: dict[str, np.ndarray] = {}
    for split_name, split in corpus.splits.items():
        lengths = np.array([len(sentence) for sentence in split.sentences], dtype=np.int64)
        arrays[f"{split_name}.lengths"] = lengths
        arrays[f"{split_name}.tokens"] = _concatenate(split.sentences, np.int32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    meta = {
        "key": corpus.digest,
        "name": corpus.name,
        "vocab": json.loads(corpus.vocab.to_json()),
        "shared_boundary": {name: split.shared_boundary for name, split in corpus.splits.items()},
        "params": corpus.params,
        "stats": corpus.stats,
        "source": corpus.source,
        "warnings": warnings,
    }
    npz_path, json_path = entry_paths(cache_dir, corpus.name, corpus.digest)
    write_atomically(npz_path, buffer.getvalue())
    write_atomically(json_path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))


def read_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of a cached .npz, or None for a miss: none there, or one that cannot be read (a
    truncated or foreign file), which is said in one line naming it and is then built again."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            return {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        discard(path, err)
        return None


def discard(path: Path, err: Exception) -> None:
    """Say once that a cache file is unreadable and remove it, so the entry is built again, not met again."""
    log.warning("the cache entry %s is unreadable (%s): building it again", path, err)
    with contextlib.suppress(OSError):
        path.unlink()


def load(cache_dir: Path, name: str, key: str) -> tuple[Corpus, list[str]] | None:
    """The stored corpus and its warnings, or None when there is no complete, readable entry."""
    npz_path, json_path = entry_paths(cache_dir, name, key)
    if not json_path.is_file():
        return None
    arrays = read_arrays(npz_path)
    if arrays is None:
        return None
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        splits = {
            split_name: _split(arrays, split_name, meta["shared_boundary"][split_name]) for split_name in SPLIT_NAMES
        }
    except (OSError, ValueError, KeyError, TypeError) as err:
        discard(json_path, err)
        return None
    if meta.get("key") != key:
        return None
    corpus = Corpus(
        name=meta["name"],
        vocab=Vocabulary.from_json(json.dumps(meta["vocab"])),
        splits=splits,
        digest=key,
        params=meta["params"],
        stats=meta["stats"],
        source=meta["source"],
    )
    return corpus, meta["warnings"]


def _split(arrays: Any, split_name: str, shared_boundary: bool) -> Split:
    lengths = arrays[f"{split_name}.lengths"]
    tokens = arrays[f"{split_name}.tokens"]
    sentences = np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return Split(sentences=sentences, shared_boundary=shared_boundary)


def _concatenate(pieces: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(pieces).astype(dtype) if pieces else np.zeros(0, dtype=dtype)
