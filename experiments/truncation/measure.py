"""The truncation study's numbers: each finished sweep job scored on its test split, then each cell over its seeds.

A job's numbers come from its best checkpoint (lowest validation loss) on the test split, which
played no part in choosing it, under the evaluation protocol the job was trained for (its saved
config's `eval.protocol`: sentence for window and full BPTT, stateful for chunk training): the
loss on the dependent targets (the echo words) above the oracle's, how often the echo is the
model's first guess, the loss on all other targets above the oracle's (the grammar, the control),
and how much gradient the trained network carries back from an output over d - 1 steps.

A cell (distance × setting) holds its jobs, one per seed; `interval` is the mean dependent
excess with its two-sided 95% Student-t interval over the seeds, and the cell is *learnt* only
when the whole interval lies below `LEARNT_EXCESS`, *not learnt* when it lies above it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import OmegaConf
from scipy import stats

from rnnexp.config import RunConfig, resolve
from rnnexp.data import Corpus, Split, load_corpus
from rnnexp.engine import build_model
from rnnexp.tracking import trained
from rnnexp.training import batches
from rnnexp.training.diagnostics import dependent_target_nll
from rnnexp.training.evaluation import sentence_loss, token_nll

LEARNT_EXCESS = 0.1  # nats per dependent target: a cell is learnt when its 95% interval lies below this
CONFIDENCE = 0.95
DECAY_BATCH = 64  # test sentences the gradient decay is measured on
DECAY_DEPTH = 24  # steps back the decay is followed: beyond the study's longest distance
CELL_NAMES = {"rnn": "", "lstm": "LSTM ", "gru": "GRU "}
FAIR_SUFFIX = " (fair)"  # on the label of a setting trained under the fair protocol


@dataclass(frozen=True)
class Job:
    """One finished (or failed) sweep job, scored on its test split."""

    distance: int
    setting: str  # "window 4", "full", "chunk 8", "LSTM full", "LSTM full (fair)", ...
    order: tuple[int, int, int, int]  # the setting's place in tables: cell, mode, bptt_truncate, fair
    seed: int
    run_id: str
    status: str
    protocol: str = ""  # the evaluation protocol the job was scored with
    reach_possible: bool = False  # whether training's gradient can reach the key from the echo
    dependent_excess: float = math.nan  # nats per dependent test target above the oracle
    echo_accuracy: float = math.nan  # share of dependent targets that are the model's first guess
    other_excess: float = math.nan  # nats per other test target above the oracle
    decay: tuple[float, ...] = ()  # mean ||∂L_t/∂s_{t-k}|| / mean ||∂L_t/∂s_t|| for k = 0.., trained model
    tokens_per_sec: float = math.nan
    minutes: float = math.nan  # wall-clock training time
    updates: int = 0  # optimiser steps, until the early stop where there was one
    tokens_per_update: float = math.nan
    epochs: int = 0  # epochs trained
    updates_to_best: int = 0  # optimiser steps until the best validation loss (the scored checkpoint)
    stopped_early: bool = False
    lr: float = math.nan
    forget_bias: float = math.nan  # the LSTM forget gate's initial bias (NaN for other cells)
    val_excess: tuple[float, ...] = ()  # the job's dependent_excess_loss at each evaluation (validation split)

    @property
    def gradient_reach(self) -> float:
        """The share of an output's gradient left after the d - 1 steps from the echo back to the key."""
        return self.decay[self.distance - 1] if len(self.decay) >= self.distance else math.nan

    @property
    def peak_val_excess(self) -> float:
        """The worst evaluation after the first epoch: far above ln V when the gradient exploded."""
        return max(self.val_excess[1:], default=math.nan)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> str:
        if self.n < 2 or math.isnan(self.high):
            return "too few seeds"
        if self.high < LEARNT_EXCESS:
            return "learnt"
        if self.low > LEARNT_EXCESS:
            return "not learnt"
        return "undecided"


def t_interval(values: Sequence[float]) -> Interval:
    """The mean and its two-sided Student-t confidence interval (NaN bounds for fewer than 2 values)."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(data) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if len(data) < 2:
        return Interval(mean, math.nan, math.nan, len(data))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data)))
    return Interval(mean, mean - half, mean + half, len(data))


@dataclass(frozen=True)
class Cell:
    """One (distance, setting) of the study: its jobs, one per seed."""

    distance: int
    setting: str
    order: tuple[int, int, int, int]
    jobs: tuple[Job, ...]

    @property
    def finished(self) -> list[Job]:
        return [job for job in self.jobs if job.status == "FINISHED"]

    def interval(self, value: str = "dependent_excess") -> Interval:
        return t_interval([getattr(job, value) for job in self.finished])

    def mean(self, value: str) -> float:
        values = [getattr(job, value) for job in self.finished]
        return float(np.nanmean(values)) if values and not all(math.isnan(v) for v in values) else math.nan

    @property
    def verdict(self) -> str:
        return self.interval().verdict

    @property
    def seeds_learnt(self) -> int:
        return sum(job.dependent_excess < LEARNT_EXCESS for job in self.finished)

    @property
    def reach_possible(self) -> bool:
        return any(job.reach_possible for job in self.jobs)

    @property
    def minutes(self) -> float:
        return sum(job.minutes for job in self.finished if not math.isnan(job.minutes))


def unique_jobs(jobs: Sequence[Job]) -> tuple[list[Job], list[float]]:
    """One job per (distance, setting, seed), a finished one first; and, for each job that ran twice
    (the same cell and seed in two sweeps), how far its dependent excess lies from the one kept."""
    kept: dict[tuple[int, str, int], Job] = {}
    gaps = []
    for job in sorted(jobs, key=lambda j: j.status != "FINISHED"):
        key = (job.distance, job.setting, job.seed)
        if key not in kept:
            kept[key] = job
        elif job.status == "FINISHED":
            gaps.append(abs(job.dependent_excess - kept[key].dependent_excess))
    return list(kept.values()), gaps


def cells_of(jobs: Sequence[Job]) -> list[Cell]:
    """The jobs grouped by (distance, setting), one per seed, in table order."""
    groups: dict[tuple[int, str], list[Job]] = {}
    for job in unique_jobs(jobs)[0]:
        groups.setdefault((job.distance, job.setting), []).append(job)
    cells = [Cell(d, s, group[0].order, tuple(sorted(group, key=lambda j: j.seed))) for (d, s), group in groups.items()]
    return sorted(cells, key=lambda cell: (cell.distance, cell.order))


def run_config(client: MlflowClient, run_id: str) -> RunConfig:
    """The job's whole resolved config, from the `config.yaml` artifact every run logs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, trained.CONFIG_ARTIFACT, tmp)
        return resolve(OmegaConf.load(path))


def is_fair(cfg: RunConfig) -> bool:
    """Trained under the fair protocol (conf/experiment/truncation_fair.yaml): a rate chosen on
    validation and early stopping; the fixed-rate study trains every cell for all its epochs."""
    return cfg.train.patience is not None


def describe_setting(cfg: RunConfig) -> tuple[str, tuple[int, int, int, int]]:
    """The setting's label and its table order: RNN before LSTM before GRU; window, full, chunk;
    each fair-protocol setting right after its fixed-rate twin."""
    model = cfg.model
    reaches_past_sentences = model.truncation == "window" and model.bptt_truncate > cfg.dataset.synthetic.max_words
    full = model.truncation == "full" or reaches_past_sentences
    mode = "full" if full else f"{model.truncation} {model.bptt_truncate}"
    rank = {"window": 0, "full": 1, "chunk": 2}["full" if full else model.truncation]
    order = (list(CELL_NAMES).index(model.cell), rank, model.bptt_truncate, int(is_fair(cfg)))
    label = CELL_NAMES.get(model.cell, f"{model.cell} ") + mode + (FAIR_SUFFIX if is_fair(cfg) else "")
    return label, order


def reach_possible(cfg: RunConfig) -> bool:
    """Whether training sends the echo's error back to the step that read the key (d - 1 steps).

    Full BPTT always; window k when k >= d - 1; chunk k only for echoes whose key lies in the same
    chunk, which needs k >= d.
    """
    model, distance = cfg.model, cfg.dataset.synthetic.distance
    if model.truncation == "full":
        return True
    if model.truncation == "window":
        return model.bptt_truncate >= distance - 1
    return model.bptt_truncate >= distance


def measure(client: MlflowClient, run: Run, checkpoint_dir: Path, corpora: dict[str, Corpus]) -> Job:
    """Score one job; `corpora` caches the corpora across jobs (all seeds of a distance share one)."""
    cfg = run_config(client, run.info.run_id)
    setting, order = describe_setting(cfg)
    base = dict(
        distance=cfg.dataset.synthetic.distance,
        setting=setting,
        order=order,
        seed=cfg.seed,
        run_id=run.info.run_id,
        status=run.info.status,
        protocol=cfg.eval.protocol,
        reach_possible=reach_possible(cfg),
    )
    if run.info.status != "FINISHED":
        return Job(**base)
    key = repr(cfg.dataset)
    if key not in corpora:
        corpora[key] = load_corpus(cfg.dataset, seed=cfg.seed)
    test, model = corpora[key].splits["test"], trained.load(client, run.info.run_id, "best", checkpoint_dir).model
    dependent, echo, other = score(model, test, cfg.eval.protocol)
    val_loss = history(client, run.info.run_id, "val_loss")
    updates = max((m.step for m in val_loss), default=0)
    best = min(val_loss, key=lambda m: m.value, default=None)
    minutes = (run.info.end_time - run.info.start_time) / 60_000 if run.info.end_time else math.nan
    epochs = int(max((m.value for m in history(client, run.info.run_id, "epoch")), default=cfg.train.epochs))
    train_tokens = corpora[key].splits["train"].n_targets * epochs
    return Job(
        **base,
        dependent_excess=dependent,
        echo_accuracy=echo,
        other_excess=other,
        decay=relative_decay(model, test),
        tokens_per_sec=run.data.metrics.get("tokens_per_sec", math.nan),
        minutes=minutes,
        updates=updates,
        tokens_per_update=train_tokens / updates if updates else math.nan,
        epochs=epochs,
        updates_to_best=best.step if best is not None else 0,
        stopped_early="stopped_early_epoch" in run.data.metrics,
        lr=cfg.optim.lr,
        forget_bias=cfg.model.forget_bias if cfg.model.cell == "lstm" else math.nan,
        val_excess=tuple(m.value for m in history(client, run.info.run_id, "dependent_excess_loss")),
    )


def score(model: Any, split: Split, protocol: str) -> tuple[float, float, float]:
    """Dependent excess, echo accuracy and other excess on `split` under `protocol` (sentence or stateful)."""
    if protocol == "stateful":
        return stateful_score(model, split)
    model_nll, oracle_nll = dependent_target_nll(model, split)
    dependent_sum = float((model_nll - oracle_nll).sum())
    total_excess = (sentence_loss(model, batches.usable(split.sentences), 256) - split.oracle_nll) * split.n_targets
    other = (total_excess - dependent_sum) / (split.n_targets - len(model_nll))
    return float(model_nll.mean() - oracle_nll.mean()), sentence_echo_accuracy(model, split), other


def stateful_score(model: Any, split: Split) -> tuple[float, float, float]:
    """The same three numbers with the split read as one stream, the state carried throughout.

    Score j predicts stream[j + 1]; sentence i's targets sit at offset_i + 0..len_i - 2, and the
    score at offset_i + len_i - 1 (the next sentence's start token) is nobody's target.
    """
    stream = split.stream()
    nll = token_nll(model, split, "stateful")
    guesses = np.asarray(model.predict(stream[:-1]))
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in split.sentences])[:-1]])
    dependent_at, targets_at = [], []
    for offset, sentence, marks in zip(offsets, split.sentences, split.dependent):
        targets_at.append(offset + np.arange(len(sentence) - 1))
        dependent_at.append(offset + np.flatnonzero(marks))
    dependent_idx, target_idx = np.concatenate(dependent_at), np.concatenate(targets_at)
    oracle = np.concatenate(split.oracle_token_nll)
    oracle_dependent = np.concatenate([o[m] for o, m in zip(split.oracle_token_nll, split.dependent)])
    dependent_excess = float(nll[dependent_idx].mean() - oracle_dependent.mean())
    dependent_sum = float(nll[dependent_idx].sum() - oracle_dependent.sum())
    other_targets = len(target_idx) - len(dependent_idx)
    other_excess = (float(nll[target_idx].sum() - oracle.sum()) - dependent_sum) / other_targets
    accuracy = float(np.mean(guesses[dependent_idx] == stream[dependent_idx + 1]))
    return dependent_excess, accuracy, other_excess


def history(client: MlflowClient, run_id: str, key: str) -> list:
    """A metric's values in step order (empty when the run did not log it)."""
    return sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.step)


def sentence_echo_accuracy(model: Any, split: Split) -> float:
    """The share of dependent targets that the model ranks first, each sentence from a zero state."""
    hits = []
    for sentence, dependent in zip(split.sentences, split.dependent):
        if dependent.any():
            end = int(np.flatnonzero(dependent)[-1]) + 1
            guesses = model.predict(sentence[:end])
            hits.extend(guesses[dependent[:end]] == sentence[1 : end + 1][dependent[:end]])
    return float(np.mean(hits))


def relative_decay(model: Any, split: Split) -> tuple[float, ...]:
    """The gradient decay with depth on test sentences, relative to depth 0, following the full chain."""
    x, y, mask = batches.pad(batches.usable(split.sentences)[:DECAY_BATCH])
    decay = model.gradient_decay(x, y, mask, max_depth=DECAY_DEPTH)
    return tuple(float(value) for value in decay / decay[0])


def initial_decay(cfg: RunConfig, vocab_size: int, split: Split) -> tuple[float, ...]:
    """The same decay for an untrained network of `cfg` (initialised from its seed)."""
    return relative_decay(build_model(cfg.model, vocab_size, cfg.seed), split)
