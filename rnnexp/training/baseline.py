"""The Kneser–Ney baseline of a run: trained on its training split, scored on exactly the RNN's tokens.

Real data has no oracle, so a word-level run logs the strongest simple baseline beside its own
perplexity (`kn<order>_val_ppl`, `kn<order>_test_ppl`), and at the end the RNN mixed with the best
order token by token, P = λ·P_rnn + (1−λ)·P_kn with λ tuned on validation, as rnnlm reports its
headline results (`interp_kn<order>_test_ppl`). Scores are cached per dataset digest and protocol,
so the jobs of a sweep build each model once.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from rnnexp.config.schema import KneserNeyConfig
from rnnexp.data import Corpus, Split
from rnnexp.data.cache import build_lock, default_cache_dir, read_arrays
from rnnexp.engine.kneser_ney import KneserNey, interpolated_nll, tune_interpolation
from rnnexp.training import batches

SCORED_SPLITS = ("valid", "test")


def scored_tokens(split: Split, protocol: str) -> np.ndarray | list[np.ndarray]:
    """The split as the protocol reads it: one stream, or its sentences each on its own."""
    return split.stream() if protocol == "stateful" else batches.usable(split.sentences)


def order_scores(
    corpus: Corpus, protocol: str, order: int, modified: bool, cache_dir: Path | None = None
) -> dict[str, np.ndarray]:
    """Per-token NLL of the valid and test splits (where not empty) under one Kneser–Ney model, cached."""
    directory = (cache_dir or default_cache_dir()) / "kneser_ney"
    key = f"{corpus.digest[:24]}-{protocol}-{order}-{'modified' if modified else 'plain'}"
    path = directory / f"kn-{key}.npz"
    cached = read_arrays(path)
    if cached is not None:
        return cached
    with build_lock(directory, "kn", key):
        cached = read_arrays(path)  # another job may have built it meanwhile
        if cached is not None:
            return cached
        train = scored_tokens(corpus.splits["train"], protocol)
        model = KneserNey.fit(train, order, len(corpus.vocab), modified)
        scores = {
            name: model.token_nll(scored_tokens(corpus.splits[name], protocol))
            for name in SCORED_SPLITS
            if batches.usable(corpus.splits[name].sentences)
        }
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, **scores)  # type: ignore[arg-type]
        partial.replace(path)
        return scores


def baseline_metrics(
    corpus: Corpus, protocol: str, cfg: KneserNeyConfig, cache_dir: Path | None = None
) -> dict[str, float]:
    """`kn<order>_val_ppl` and `kn<order>_test_ppl` for every configured order."""
    metrics: dict[str, float] = {}
    for order in cfg.orders:
        for name, nll in order_scores(corpus, protocol, order, cfg.modified, cache_dir).items():
            metrics[f"kn{order}_{'val' if name == 'valid' else name}_ppl"] = math.exp(float(nll.mean(dtype=np.float64)))
    return metrics


def interpolation_metrics(
    corpus: Corpus, protocol: str, cfg: KneserNeyConfig, model_nll: dict[str, np.ndarray], cache_dir: Path | None = None
) -> dict[str, float]:
    """The RNN mixed with the order that is best on validation, λ tuned on validation, scored on test."""
    scores = {order: order_scores(corpus, protocol, order, cfg.modified, cache_dir) for order in cfg.orders}
    scores = {order: s for order, s in scores.items() if "valid" in s and "test" in s}
    if not scores or "valid" not in model_nll or "test" not in model_nll:
        return {}
    best = min(scores, key=lambda order: float(scores[order]["valid"].mean()))
    lam = tune_interpolation(model_nll["valid"], scores[best]["valid"])
    mixed = {name: interpolated_nll(model_nll[name], scores[best][name], lam) for name in SCORED_SPLITS}
    return {
        f"interp_kn{best}_lambda": lam,
        f"interp_kn{best}_val_ppl": math.exp(float(mixed["valid"].mean(dtype=np.float64))),
        f"interp_kn{best}_test_ppl": math.exp(float(mixed["test"].mean(dtype=np.float64))),
    }


def timed_table(corpus: Corpus, protocol: str, orders: list[int], modified: bool) -> list[dict[str, float]]:
    """One row per order: its perplexities and the seconds to build and score it (uncached)."""
    rows = []
    train = scored_tokens(corpus.splits["train"], protocol)
    for order in orders:
        started = time.perf_counter()
        model = KneserNey.fit(train, order, len(corpus.vocab), modified)
        built = time.perf_counter()
        row: dict[str, float] = {"order": order, "build_s": built - started}
        for name in SCORED_SPLITS:
            if batches.usable(corpus.splits[name].sentences):
                nll = model.token_nll(scored_tokens(corpus.splits[name], protocol))
                row[f"{name}_ppl"] = math.exp(float(nll.mean(dtype=np.float64)))
                row[f"{name}_tokens"] = nll.size
        row["score_s"] = time.perf_counter() - built
        rows.append(row)
    return rows
