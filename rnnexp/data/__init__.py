"""Datasets: a vocabulary and train / valid / test token sequences, whatever the source.

`load_corpus(cfg.dataset, seed=cfg.seed, cache_dir=...)` is the one entry point; `DatasetConfig`
is the schema of the `dataset` config group.
"""

from rnnexp.config.dataset import DatasetConfig, SyntheticConfig
from rnnexp.data.corpus import Corpus, Split
from rnnexp.data.load import load_corpus
from rnnexp.data.vocab import SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN, Vocabulary

__all__ = [
    "SENTENCE_END",
    "SENTENCE_START",
    "UNKNOWN_TOKEN",
    "Corpus",
    "DatasetConfig",
    "Split",
    "SyntheticConfig",
    "Vocabulary",
    "load_corpus",
]
