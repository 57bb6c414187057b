"""What a new run is described by in MLflow: params, tags, datasets, its config and vocabulary."""

from __future__ import annotations

from omegaconf import OmegaConf

from rnnexp.config import RunConfig, as_tree
from rnnexp.data import Corpus
from rnnexp.tracking import trained
from rnnexp.tracking.logger import RunLogger
from rnnexp.tracking.params import environment_tags, flat_params


def describe(run: RunLogger, cfg: RunConfig, corpus: Corpus) -> None:
    """Params, tags, config and vocabulary: logged once, when the run starts."""
    tree = as_tree(cfg)
    validation = "valid" if any(len(s) >= 2 for s in corpus.splits["valid"].sentences) else "train"
    run.log_params({**flat_params(tree), **corpus.params, "vocab_size_actual": str(len(corpus.vocab))})
    run.set_tags({**environment_tags(), "dataset_digest": corpus.digest, "dataset": corpus.name,
                  "validation_split": validation})
    run.log_dataset(corpus.name, corpus.digest, corpus.source or corpus.name)
    run.log_text(OmegaConf.to_yaml(tree), trained.CONFIG_ARTIFACT)
    run.log_text(corpus.vocab.to_json(), trained.VOCAB_ARTIFACT)
