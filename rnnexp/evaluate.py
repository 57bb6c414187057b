"""Scoring a model on a split: the trainer's evaluation, and `python -m rnnexp.evaluate run_id=...`.

    python -m rnnexp.evaluate run_id=<run> split=test          # the data the run trained on
    python -m rnnexp.evaluate run_id=<run> dataset=ptb         # other data, mapped to the run's words
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np

from rnnexp import batches, cli, config, trained, tracking
from rnnexp.data import load_corpus
from rnnexp.data.vocab import Vocabulary
from rnnexp.errors import UserError
from rnnexp.model import RNNLM


def mean_nll(model: RNNLM, sentences: Sequence[np.ndarray], batch_size: int) -> float:
    """Mean negative log-likelihood per target over whole sentences, each from a zero state."""
    total, count = 0.0, 0
    for x, y, mask in batches.eval_batches(sentences, batch_size):
        nll, _ = model.token_nll(x, y, mask)
        total += float(nll.sum())
        count += int(mask.sum())
    return total / count


def translate(sentences: Sequence[np.ndarray], source: Vocabulary, target: Vocabulary) -> list[np.ndarray]:
    """Sentences re-encoded from one vocabulary's ids into another's, by word."""
    try:
        mapping = np.array([target.index(word) for word in source.words])
    except KeyError as err:
        raise UserError(f"the word {err.args[0]!r} is not in the run's vocabulary, which has no unknown token: "
                        "evaluate on data with the run's own words.") from None
    return [mapping[sentence] for sentence in sentences]


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@cli.reports_user_errors
def main(cfg: config.EvaluateConfig) -> None:
    client = tracking.connect(tracking.resolve_tracking_uri(cfg.tracking_uri))
    run = trained.load(client, cfg.run_id, cfg.checkpoint, Path(cfg.checkpoint_dir).resolve())
    corpus = load_corpus(cfg.dataset if cfg.dataset is not None else run.config.dataset, seed=run.config.seed)
    if cfg.split not in corpus.splits:
        raise UserError(f"split must be one of {', '.join(corpus.splits)}, got {cfg.split!r}.")
    sentences = batches.usable(corpus.splits[cfg.split].sentences)
    if not sentences:
        raise UserError(f"the {cfg.split} split of {corpus.name} is empty: choose another split.")
    if corpus.vocab != run.vocab:
        sentences = translate(sentences, corpus.vocab, run.vocab)
    loss = mean_nll(run.model, sentences, cfg.batch_size)
    targets = sum(len(s) - 1 for s in sentences)
    print(f"run {cfg.run_id} ({cfg.checkpoint} checkpoint) on {corpus.name}/{cfg.split}: "
          f"loss {loss:.4f}, perplexity {math.exp(loss):.2f} over {targets} targets")


if __name__ == "__main__":
    cli.guard(main)
