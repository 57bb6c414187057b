"""One cell of the truncation study: a finished sweep job, scored on its test split's dependent targets.

The numbers come from the job's best checkpoint (lowest validation loss) on the test split, which
played no part in choosing it: the loss on the dependent targets (the echo words) above the
oracle's, how often the echo is the model's first guess, the loss on all other targets above the
oracle's (the grammar, for comparison), and how much gradient the trained network carries back
from an output to the step the key was read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run

from rnnexp.tracking import trained
from rnnexp.training import batches
from rnnexp.data import Corpus, Split, load_corpus
from rnnexp.training.diagnostics import dependent_target_nll
from rnnexp.training.evaluation import sentence_loss
from rnnexp.engine.rnn import RNNLM

DECAY_BATCH = 64  # test sentences the gradient decay is measured on
DECAY_DEPTH = 24  # steps back the decay is followed, as far as the study's longest sentences reach


@dataclass(frozen=True)
class Cell:
    distance: int
    truncation: str  # window or chunk, as trained
    bptt_truncate: int
    full_bptt: bool  # window mode reaching back further than any sentence: exactly full BPTT
    run_id: str
    status: str
    dependent_excess: float = math.nan  # nats per dependent test target above the oracle
    echo_accuracy: float = math.nan  # share of dependent targets that are the model's first guess
    other_excess: float = math.nan  # nats per other test target above the oracle
    decay: tuple[float, ...] = ()  # mean ||∂L_t/∂s_{t-k}|| / mean ||∂L_t/∂s_t|| for k = 0.., trained model
    tokens_per_sec: float = math.nan
    minutes: float = math.nan  # wall-clock training time
    updates: int = 0  # optimiser steps: the same epochs are fewer, larger steps for long chunks
    val_excess: tuple[float, ...] = ()  # the job's dependent_excess_loss at each evaluation (validation split)
    spectral_radius: float = math.nan  # of W at the last evaluation

    @property
    def final_val_excess(self) -> float:
        return self.val_excess[-1] if self.val_excess else math.nan

    @property
    def peak_val_excess(self) -> float:
        """The worst evaluation after the first epoch: far above ln V when the gradient exploded."""
        return max(self.val_excess[1:], default=math.nan)

    @property
    def gradient_reach(self) -> float:
        """The share of an output's gradient left after the d - 1 steps from the echo back to the key."""
        return self.decay[self.distance - 1] if len(self.decay) >= self.distance else math.nan

    @property
    def setting(self) -> str:
        return "full" if self.full_bptt else f"{self.truncation} {self.bptt_truncate}"


def measure(client: MlflowClient, run: Run, checkpoint_dir: Path, corpora: dict[int, Corpus]) -> Cell:
    """Score one finished job; `corpora` caches each distance's corpus across jobs."""
    params = run.data.params
    distance, truncation = int(params["dataset.synthetic.distance"]), params["model.truncation"]
    bptt_truncate = int(params["model.bptt_truncate"])
    # A sentence has at most max_words + 1 targets, so the error never has more steps to go back.
    full = truncation == "window" and bptt_truncate >= int(params["dataset.synthetic.max_words"])
    if run.info.status != "FINISHED":
        return Cell(distance, truncation, bptt_truncate, full, run.info.run_id, run.info.status)
    loaded = trained.load(client, run.info.run_id, "best", checkpoint_dir)
    if distance not in corpora:
        corpora[distance] = load_corpus(loaded.config.dataset, seed=loaded.config.seed)
    corpus = corpora[distance]
    test, model = corpus.splits["test"], loaded.model
    model_nll, oracle_nll = dependent_target_nll(model, test)
    total_excess = (sentence_loss(model, batches.usable(test.sentences), 256) - test.oracle_nll) * test.n_targets
    dependent_excess_sum = float((model_nll - oracle_nll).sum())
    minutes = (run.info.end_time - run.info.start_time) / 60_000 if run.info.end_time else math.nan
    return Cell(
        distance, truncation, bptt_truncate, full, run.info.run_id, run.info.status,
        dependent_excess=float(model_nll.mean() - oracle_nll.mean()),
        echo_accuracy=echo_accuracy(model, test),
        other_excess=(total_excess - dependent_excess_sum) / (test.n_targets - len(model_nll)),
        decay=relative_decay(model, test),
        tokens_per_sec=run.data.metrics.get("tokens_per_sec", math.nan),
        minutes=minutes,
        updates=max(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")),
        val_excess=tuple(m.value for m in history(client, run.info.run_id, "dependent_excess_loss")),
        spectral_radius=run.data.metrics.get("w_spectral_radius", math.nan),
    )


def history(client: MlflowClient, run_id: str, key: str) -> list:
    """A metric's values in step order (empty when the run did not log it)."""
    return sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.step)


def echo_accuracy(model: RNNLM, split: Split) -> float:
    """The share of dependent targets that the model ranks first."""
    hits = []
    for sentence, dependent in zip(split.sentences, split.dependent):
        if dependent.any():
            end = int(np.flatnonzero(dependent)[-1]) + 1
            guesses = model.predict(sentence[:end])
            hits.extend(guesses[dependent[:end]] == sentence[1 : end + 1][dependent[:end]])
    return float(np.mean(hits))


def relative_decay(model: RNNLM, split: Split) -> tuple[float, ...]:
    """The gradient decay with depth on test sentences, relative to depth 0, following the full chain."""
    x, y, mask = batches.pad(batches.usable(split.sentences)[:DECAY_BATCH])
    decay = model.gradient_decay(x, y, mask, max_depth=DECAY_DEPTH)
    return tuple(float(value) for value in decay / decay[0])


def initial_decay(params: dict[str, str], split: Split) -> tuple[float, ...]:
    """The same decay for the untrained network the jobs start from (their shared model seed)."""
    model = RNNLM(int(params["vocab_size_actual"]), int(params["model.hidden_dim"]), dtype=params["model.dtype"],
                  seed=int(params["seed"]))
    return relative_decay(model, split)
