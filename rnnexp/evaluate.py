"""`python -m rnnexp.evaluate run_id=... [split=test] [dataset=...]`: score a run's checkpoint.

    python -m rnnexp.evaluate run_id=<run> split=test          # the data the run trained on
    python -m rnnexp.evaluate run_id=<run> dataset=ptb         # other data, mapped to the run's words

The protocol is the one the run was evaluated with (`eval.protocol`, logged as a param), unless
`protocol=` says otherwise; the score is the one the trainer logs for the same split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np

from rnnexp import cli, config
from rnnexp.config.resolve import settle_protocol
from rnnexp.data import Split, load_corpus
from rnnexp.data.vocab import Vocabulary
from rnnexp.errors import UserError
from rnnexp.tracking import trained
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.training import evaluation


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@cli.reports_user_errors
def main(cfg: config.EvaluateConfig) -> None:
    client = connect(resolve_tracking_uri(cfg.tracking_uri))
    run = trained.load(client, cfg.run_id, cfg.checkpoint, Path(cfg.checkpoint_dir).resolve())
    corpus = load_corpus(cfg.dataset if cfg.dataset is not None else run.config.dataset, seed=run.config.seed)
    if cfg.split not in corpus.splits:
        raise UserError(f"split must be one of {', '.join(corpus.splits)}, got {cfg.split!r}.")
    split = corpus.splits[cfg.split]
    if not any(len(s) >= 2 for s in split.sentences):
        raise UserError(f"the {cfg.split} split of {corpus.name} is empty: choose another split.")
    if corpus.vocab != run.vocab:
        split = Split(translate(split.sentences, corpus.vocab, run.vocab), shared_boundary=split.shared_boundary)
    protocol = run.config.eval.protocol
    if cfg.protocol is not None:
        run.config.eval.protocol = cfg.protocol
        protocol = settle_protocol(run.config.eval, run.config)
    nll = evaluation.token_nll(run.model, split, protocol, run.config.eval.batch_size, run.config.eval.segment_length)
    loss = float(nll.mean(dtype=np.float64))
    print(
        f"run {cfg.run_id} ({cfg.checkpoint} checkpoint) on {corpus.name}/{cfg.split}, {protocol} protocol: "
        f"loss {loss:.4f}, perplexity {math.exp(loss):.2f} over {nll.size} targets"
    )


if __name__ == "__main__":
    cli.guard(main)
