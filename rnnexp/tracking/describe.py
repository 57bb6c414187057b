"""What a new run is described by in MLflow: a readable name, a description, params, tags, datasets,
its config and vocabulary.

The name and the description's command line come from the overrides the run was started with, the
way the researcher typed them: `model.cell=lstm model.hidden_dim=200 optim.lr=20` is the run `lstm h200 lr20`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from omegaconf import OmegaConf

from rnnexp.config import RunConfig, as_tree
from rnnexp.data import Corpus
from rnnexp.tracking import trained
from rnnexp.tracking.logger import RunLogger
from rnnexp.tracking.params import environment_tags, flat_params

# Where a run is logged and how it is named, not what it is: MLflow shows these itself.
NOT_PARAMS = ("tracking_uri", "experiment_name", "run_name", "resume")
# Overrides that change where or how fast a run works, never its result: left out of its name.
NOT_IN_NAME = (
    *NOT_PARAMS,
    "blas_threads",
    "train.checkpoint_dir",
    "train.flush_every_s",
    "train.log_every",
    "train.checkpoint_every",
    "diagnostics.figure_interval_s",
    "hydra",
)
# Knobs whose value says it all (`lstm`, `chunk`, `adam`), and short prefixes for numbers (`h200`).
BY_VALUE = (
    "model",
    "dataset",
    "optim",
    "schedule",
    "experiment",
    "model.cell",
    "model.truncation",
    "optim.name",
    "schedule.name",
    "dataset.name",
    "dataset.level",
    "model.dtype",
    "model.output",
)
PREFIXES = {
    "hidden_dim": "h",
    "bptt_truncate": "bptt",
    "vocab_size": "v",
    "lr": "lr",
    "epochs": "ep",
    "batch_size": "b",
    "seed": "seed",
    "layers": "L",
    "embedding_dim": "emb",
    "dropout": "drop",
    "clip_norm": "clip",
}
MAX_NAME = 120
DEFAULT_NAME = "default"  # a run with no override that changes its result
SPLIT_CONTEXTS = {"train": "training", "valid": "validation", "test": "testing"}


def describe(run: RunLogger, cfg: RunConfig, corpus: Corpus) -> None:
    """Params, tags, description, datasets, config and vocabulary: logged once, when the run starts."""
    tree = as_tree(cfg)
    validation = "valid" if any(len(s) >= 2 for s in corpus.splits["valid"].sentences) else "train"
    run.log_params(run_params(cfg, corpus))
    run.set_tags(
        {
            **environment_tags(),
            "dataset_digest": corpus.digest,
            "dataset": corpus.name,
            "validation_split": validation,
            MLFLOW_RUN_NOTE: description(cfg, corpus, command_line()),
            **benchmark_tags(corpus),
        }
    )
    log_datasets(run, corpus)
    run.log_text(OmegaConf.to_yaml(tree), trained.CONFIG_ARTIFACT)
    run.log_text(corpus.vocab.to_json(), trained.VOCAB_ARTIFACT)


def run_params(cfg: RunConfig, corpus: Corpus) -> dict[str, str]:
    """The resolved config as flat params, each knob once; unset knobs (None) and bookkeeping left out."""
    tree = {key: value for key, value in as_tree(cfg).items() if key not in NOT_PARAMS}
    return {**flat_params(without_none(tree)), **corpus.params, "vocab_size_actual": str(len(corpus.vocab))}


def without_none(node: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: without_none(value) if isinstance(value, Mapping) else value
        for key, value in node.items()
        if value is not None
    }


def command_overrides() -> list[str] | None:
    """The overrides this process's Hydra run (or sweep job) was started with; None outside Hydra."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def command_line() -> str:
    """The command that starts this run again: `python -m rnnexp.run` and its overrides (a sweep job's
    own, which reproduce that job alone), or this process's own command line outside Hydra."""
    overrides = command_overrides()
    if overrides is None:
        return shlex.join(["python", *sys.argv])
    return shlex.join(["python", "-m", "rnnexp.run", *overrides])


def readable_name(overrides: Sequence[str] | None, cfg: RunConfig | None) -> str:
    """A short name from the overrides that change the result (`lstm h200 lr20`), `default` without any.

    Outside Hydra, where the overrides are unknown, the name spells out the model instead.
    """
    if overrides is None:
        if cfg is None:
            return DEFAULT_NAME
        return f"{cfg.model.cell} h{cfg.model.hidden_dim} lr{cfg.optim.lr:g}"
    words = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete() or re.split(r"[./]", key)[0] in NOT_IN_NAME or key in NOT_IN_NAME:
            continue
        words.append(short_form(key, (override.input_line or "").split("=", 1)[-1]))  # as typed: `32,64` in a sweep
    name = " ".join(words) or DEFAULT_NAME
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def single_run_name(overrides: Sequence[str] | None, cfg: RunConfig | None, started: float) -> str:
    """A run's name outside a sweep: `readable_name`, and for the default config its start time
    (`default 12-06 17:54:31`), since runs of one config differ only in when they ran."""
    name = readable_name(overrides, cfg)
    return f"{name} {time.strftime('%m-%d %H:%M:%S', time.localtime(started))}" if name == DEFAULT_NAME else name


def short_form(key: str, value: str) -> str:
    """One override as a word of a run name: `lstm`, `h200`, `distance=6`, `tie_weights`."""
    if key in BY_VALUE:
        return value
    leaf = key.rsplit(".", 1)[-1]
    if leaf in PREFIXES and re.match(r"[-.\d]", value):  # numbers, and a sweep's lists of them
        return f"{PREFIXES[leaf]}{value}"
    if value.lower() == "true":
        return leaf
    return f"{leaf}={value}"


def description(cfg: RunConfig, corpus: Corpus, command: str) -> str:
    """The run's MLflow description (markdown): how to start it again, on what data, with what model."""
    model, optim, train = cfg.model, cfg.optim, cfg.train
    sizes = ", ".join(f"{name} {len(split)} ({split.n_targets} targets)" for name, split in corpus.splits.items())
    data = (
        f"**Data** `{corpus.name}` from {corpus.source or 'its generator'}, digest `{corpus.digest[:12]}`: "
        f"{len(corpus.vocab)} words; sequences: {sizes}."
    )
    if "benchmark" in corpus.stats:  # PTB: whether these are the standard benchmark's tokens, and if not why
        data += f" {corpus.stats['benchmark']}"
    oracle = corpus.splits["valid"].oracle_nll
    if oracle is not None:
        data += f" The generator's own perplexity on valid, the floor no model beats: {math.exp(oracle):.2f}."
    truncation = f"{model.truncation} truncation at {model.bptt_truncate}"
    if model.truncation == "full":
        truncation = "full BPTT"
    setup = (
        f"**Model** {model.cell}, {model.hidden_dim} hidden units, {truncation}; {optim.name} at lr {optim.lr:g} "
        f"({cfg.schedule.name} schedule), {train.epochs} epoch{'s' * (train.epochs != 1)} of "
        f"{train.batch_size}-sequence batches; held-out perplexity by the {cfg.eval.protocol} protocol."
    )
    return f"```\n{command}\n```\n\n{data}\n\n{setup}\n"


def benchmark_tags(corpus: Corpus) -> dict[str, str]:
    """`dataset.standard_benchmark=true|false` where the dataset checks its files against a benchmark (PTB)."""
    if "standard_benchmark" not in corpus.stats:
        return {}
    return {"dataset.standard_benchmark": str(bool(corpus.stats["standard_benchmark"])).lower()}


def log_datasets(run: RunLogger, corpus: Corpus) -> None:
    """Every non-empty split as a dataset input of the run, with its use (training, validation, testing)."""
    for split_name, context in SPLIT_CONTEXTS.items():
        split = corpus.splits[split_name]
        if not any(len(s) >= 2 for s in split.sentences):
            continue
        digest = (
            corpus.digest
            if split_name == "train"
            else hashlib.sha256(f"{corpus.digest}/{split_name}".encode()).hexdigest()
        )
        profile = json.dumps({"split": split_name, "sentences": len(split), "targets": split.n_targets})
        run.log_dataset(corpus.name, digest, corpus.source or corpus.name, context, profile)
