"""What a run carries from step to step, and what each checkpoint holds whole: `TrainState`.

A state is made fresh for a new run or restored from a checkpoint for a resumed one; either way
the loop continues from it exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnexp.config import RunConfig, as_tree
from rnnexp.data import Corpus, Split
from rnnexp.engine import build_model, load_params
from rnnexp.engine.optim import Optimizer, make_optimizer
from rnnexp.errors import UserError
from rnnexp.training import batches, checkpoint
from rnnexp.training.recorder import Recorder


@dataclass
class Data:
    """The corpus as the loop consumes it."""

    corpus: Corpus
    train_sentences: list[np.ndarray]
    chunks: batches.StreamChunks | None  # truncation=chunk: the training stream as parallel rows
    held_out: Split  # the validation split, or the training split for data without one (the tutorial's)
    held_out_name: str
    n_batches: int


@dataclass
class Progress:
    """Where training stands; saved whole in every checkpoint."""

    epoch: int = 0  # epochs completed
    position: int = 0  # batches of the current epoch done
    step: int = 0  # optimiser updates done
    tokens: int = 0  # training targets seen
    epoch_loss: float = 0.0  # this epoch: sum over batches of mean loss × targets
    epoch_tokens: int = 0
    window_loss: float = 0.0  # the same since the last logged step
    window_tokens: int = 0
    window_grad_norm: float = 0.0  # sum of gradient norms since the last logged step
    window_steps: int = 0
    monitored_losses: list[float] = field(default_factory=list)  # the schedule's loss history
    best_val_loss: float = math.inf
    evaluations_since_best: int = 0  # for train.patience
    stopped_early: bool = False
    train_seconds: float = 0.0  # time inside training steps, for the run's average tokens/s
    history: list[dict] = field(default_factory=list)  # one entry per evaluation, for the curves


@dataclass
class TrainState:
    """Everything a run needs to continue: progress, model, optimiser, data order and carried state."""

    progress: Progress
    model: Any
    optimizer: Optimizer
    rng: np.random.Generator
    order: np.ndarray  # this epoch's sentence order
    hidden: np.ndarray | None  # the state carried between chunks (truncation=chunk)
    best_params: dict[str, np.ndarray]
    config: dict  # the run's config as plain data, held so that checkpoints skip OmegaConf's slow conversion
    digests: dict[str, str]  # config_digest and data_digest: what binds each checkpoint to its run


def prepare_data(cfg: RunConfig, corpus: Corpus) -> Data:
    train_sentences = batches.usable(corpus.splits["train"].sentences)
    if not train_sentences:
        raise UserError("the training split has no sentence with two tokens or more: check the dataset config.")
    chunks = None
    if cfg.model.truncation == "chunk":
        chunks = batches.StreamChunks(corpus.splits["train"].stream(), cfg.train.batch_size, cfg.model.bptt_truncate)
        n_batches = len(chunks)
    else:
        n_batches = batches.n_sentence_batches(len(train_sentences), cfg.train.batch_size)
    has_valid = bool(batches.usable(corpus.splits["valid"].sentences))
    name = "valid" if has_valid else "train"
    return Data(corpus, train_sentences, chunks, corpus.splits[name], name, n_batches)


def new_state(cfg: RunConfig, corpus: Corpus) -> TrainState:
    model = build_model(cfg.model, len(corpus.vocab), cfg.seed, counts=train_counts(cfg, corpus))
    order = np.arange(len(batches.usable(corpus.splits["train"].sentences)))
    return TrainState(
        Progress(),
        model,
        make_optimizer(cfg.optim),
        np.random.default_rng(cfg.seed),
        order,
        None,
        copy_params(model.params),
        as_tree(cfg),
        binding_digests(cfg, corpus),
    )


def restore_state(cfg: RunConfig, corpus: Corpus, start: checkpoint.Checkpoint, checkpoint_dir: Path) -> TrainState:
    model = build_model(
        cfg.model,
        len(corpus.vocab),
        cfg.seed,
        counts=train_counts(cfg, corpus),
        word_class=start.arrays.get("word_class"),
    )
    if set(start.params) != set(model.params):
        raise UserError(
            f"the checkpoint holds parameters {sorted(start.params)}, but a {cfg.model.cell} model has "
            f"{sorted(model.params)}: resume it with the cell it was trained with."
        )
    load_params(model, start.params)
    optimizer = make_optimizer(cfg.optim)
    optimizer.load_state_dict(start.optimizer)
    best = checkpoint_dir / "best.npz"
    source = checkpoint.load(best).params if best.is_file() else start.params
    best_params = {name: value.astype(model.dtype) for name, value in source.items()}
    return TrainState(
        Progress(**start.meta["progress"]),
        model,
        optimizer,
        checkpoint.restore_generator(start.meta["rng"]),
        start.arrays["order"],
        start.arrays.get("hidden"),
        best_params,
        as_tree(cfg),
        binding_digests(cfg, corpus),
    )


def train_counts(cfg: RunConfig, corpus: Corpus) -> np.ndarray | None:
    """The training split's word counts, which the class-based output bins its classes by (None otherwise)."""
    if cfg.model.output != "class":
        return None
    return np.bincount(corpus.splits["train"].stream(), minlength=len(corpus.vocab))


def binding_digests(cfg: RunConfig, corpus: Corpus) -> dict[str, str]:
    return {"config_digest": checkpoint.config_digest(as_tree(cfg)), "data_digest": corpus.digest}


def save(
    state: TrainState,
    path: Path,
    run_id: str,
    recorder: Recorder,
    params: dict[str, np.ndarray] | None = None,
) -> None:
    """Write `state` to `path` whole, with `params` in place of the model's own if given (the best model's)."""
    arrays = {"order": state.order, **state.model.buffers}  # buffers: the class output's word classes
    if state.hidden is not None:
        arrays["hidden"] = state.hidden
    params = params or state.model.params
    meta = {
        "run_id": run_id,
        "config": state.config,
        **state.digests,
        "shapes": checkpoint.shapes(params),
        "progress": asdict(state.progress),
        "rng": checkpoint.generator_state(state.rng),
        "pending_metrics": recorder.pending(),  # a resumed run logs only later steps itself
    }
    saved = checkpoint.Checkpoint(params, state.optimizer.state_dict(), meta, arrays)
    checkpoint.save(path, saved)


@contextmanager
def averaged_params(state: TrainState) -> Iterator[None]:
    """Inside: the model holds the optimiser's running mean of its parameters, if it keeps one."""
    average = state.optimizer.average()
    if average is None:
        yield
        return
    current = copy_params(state.model.params)
    load_params(state.model, average)
    try:
        yield
    finally:
        load_params(state.model, current)


def copy_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.copy(order="K") for name, value in params.items()}
