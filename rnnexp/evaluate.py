"""`python -m rnnexp.evaluate run_id=... [split=test] [dataset=...]`: score a run's checkpoint.

    python -m rnnexp.evaluate run_id=<run> split=test          # the data the run trained on
    python -m rnnexp.evaluate run_id=<run> dataset=ptb         # other data, mapped to the run's words

The protocol is the one the run was evaluated with (`eval.protocol`, logged as a param), unless
`protocol=` says otherwise; the score is the one the trainer logs for the same split.

Two protocols adapt to the stream as they read it, on top of the stateful one (stream-trained runs only):

    python -m rnnexp.evaluate run_id=<run> protocol=cache cache.size=500 cache.theta=0.3 cache.lambda=0.1
    python -m rnnexp.evaluate run_id=<run> protocol=dynamic dynamic.lr=1 dynamic.segment_length=20
    python -m rnnexp.evaluate -m run_id=<run> protocol=cache split=valid cache.lambda=0.05,0.1,0.2

They score valid and then test unless `split=` names one, and log each perplexity to the run as the
next step of `cache_val_ppl`, `cache_test_ppl`, `dynamic_val_ppl` or `dynamic_test_ppl`, with the
settings that gave it in the tag `<metric>.settings` (the run's params stay as they are). The trained
checkpoint is never written: dynamic evaluation adapts a copy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from rnnexp import cli, config
from rnnexp.config.resolve import cache_settings, is_stream_data, settle_protocol, validate_dynamic
from rnnexp.config.schema import ADAPTIVE_PROTOCOLS, PROTOCOLS, CacheSettings, DynamicConfig
from rnnexp.data import Corpus, Split, load_corpus
from rnnexp.data.vocab import Vocabulary
from rnnexp.errors import UserError
from rnnexp.tracking import trained
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.training import cache, dynamic, evaluation

# the metric names' split part: cache_val_ppl, dynamic_test_ppl, as the trainer's val_ppl and test_ppl
METRIC_SPLITS = {"valid": "val", "test": "test", "train": "train"}


def translate(sentences: Sequence[np.ndarray], source: Vocabulary, target: Vocabulary) -> list[np.ndarray]:
    """Sentences re-encoded from one vocabulary's ids into another's, by word."""
    try:
        mapping = np.array([target.index(word) for word in source.words])
    except KeyError as err:
        raise UserError(
            f"the word {err.args[0]!r} is not in the run's vocabulary, which has no unknown token: "
            "evaluate on data with the run's own words."
        ) from None
    return [mapping[sentence] for sentence in sentences]


def adaptive_settings(cfg: config.EvaluateConfig) -> CacheSettings | DynamicConfig | None:
    """protocol=cache's or dynamic's settings, checked; None for the run's own protocols."""
    if cfg.protocol is not None and cfg.protocol not in (*PROTOCOLS, *ADAPTIVE_PROTOCOLS):
        raise UserError(
            f"protocol must be one of {', '.join((*PROTOCOLS, *ADAPTIVE_PROTOCOLS))}, got {cfg.protocol!r}."
        )
    if cfg.protocol == "cache":
        return cache_settings(cfg.cache)
    if cfg.protocol == "dynamic":
        validate_dynamic(cfg.dynamic)
        return cfg.dynamic
    return None


def held_out(corpus: Corpus, name: str, vocab: Vocabulary) -> Split:
    """The split called `name`, in the run's word ids."""
    if name not in corpus.splits:
        raise UserError(f"split must be one of {', '.join(corpus.splits)}, got {name!r}.")
    split = corpus.splits[name]
    if not any(len(s) >= 2 for s in split.sentences):
        raise UserError(f"the {name} split of {corpus.name} is empty: choose another split.")
    if corpus.vocab != vocab:
        split = Split(translate(split.sentences, corpus.vocab, vocab), shared_boundary=split.shared_boundary)
    return split


def adaptive_nll(run: trained.TrainedModel, stream: np.ndarray, settings: CacheSettings | DynamicConfig) -> np.ndarray:
    """The stream's per-token NLL under the cache or under dynamic evaluation."""
    if isinstance(settings, CacheSettings):
        return cache.cache_nll(run.model, stream, settings, run.config.eval.segment_length)
    return dynamic.dynamic_reading(run.model, run.config.model, stream, settings).nll


def described(settings: CacheSettings | DynamicConfig) -> str:
    """The settings as the overrides that give them."""
    if isinstance(settings, CacheSettings):
        return f"cache.size={settings.size} cache.theta={settings.theta:g} cache.lambda={settings.lam:g}"
    return (
        f"dynamic.lr={settings.lr:g} dynamic.segment_length={settings.segment_length} dynamic.decay={settings.decay:g}"
    )


def log_score(client: MlflowClient, run_id: str, key: str, perplexity: float, settings: str) -> None:
    """The perplexity as the next step of metric `key`, and its settings as the tag `<key>.settings`.

    Each call (a sweep's jobs included) adds a step, so the metric's latest value is the one the tag describes.
    """
    step = len(client.get_metric_history(run_id, key))
    client.log_batch(
        run_id,
        metrics=[Metric(key, perplexity, int(time.time() * 1000), step)],
        tags=[RunTag(f"{key}.settings", settings)],
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@cli.reports_user_errors
def main(cfg: config.EvaluateConfig) -> None:
    settings = adaptive_settings(cfg)  # checked before anything is loaded
    client = connect(resolve_tracking_uri(cfg.tracking_uri))
    run = trained.load(client, cfg.run_id, cfg.checkpoint, Path(cfg.checkpoint_dir).resolve())
    if settings is not None and not is_stream_data(run.config):
        raise UserError(
            f"protocol={cfg.protocol} reads the split as one stream with the state carried, but run {cfg.run_id} "
            f"trains on sentences from a zero state (model.truncation={run.config.model.truncation}): "
            "use a run trained with model.truncation=chunk."
        )
    corpus = load_corpus(cfg.dataset if cfg.dataset is not None else run.config.dataset, seed=run.config.seed)
    if settings is None:
        name = cfg.split if cfg.split is not None else "test"
        split = held_out(corpus, name, run.vocab)
        protocol = run.config.eval.protocol
        if cfg.protocol is not None:
            run.config.eval.protocol = cfg.protocol
            protocol = settle_protocol(run.config.eval, run.config)
        nll = evaluation.token_nll(
            run.model, split, protocol, run.config.eval.batch_size, run.config.eval.segment_length
        )
        loss = float(nll.mean(dtype=np.float64))
        print(
            f"run {cfg.run_id} ({cfg.checkpoint} checkpoint) on {corpus.name}/{name}, {protocol} protocol: "
            f"loss {loss:.4f}, perplexity {math.exp(loss):.2f} over {nll.size} targets"
        )
        return
    for name in [cfg.split] if cfg.split is not None else ["valid", "test"]:
        split = held_out(corpus, name, run.vocab)
        started = time.perf_counter()
        nll = adaptive_nll(run, split.stream(), settings)
        seconds = time.perf_counter() - started
        loss = float(nll.mean(dtype=np.float64))
        logged = "not logged: other data than the run's"
        if cfg.dataset is None:
            key = f"{cfg.protocol}_{METRIC_SPLITS.get(name, name)}_ppl"
            log_score(client, cfg.run_id, key, math.exp(loss), f"{described(settings)} checkpoint={cfg.checkpoint}")
            logged = f"logged as {key}"
        print(
            f"run {cfg.run_id} ({cfg.checkpoint} checkpoint) on {corpus.name}/{name}, {cfg.protocol} protocol "
            f"({described(settings)}): loss {loss:.4f}, perplexity {math.exp(loss):.2f} over {nll.size} targets "
            f"in {seconds:.1f} s, {logged}"
        )


if __name__ == "__main__":
    cli.guard(main)
