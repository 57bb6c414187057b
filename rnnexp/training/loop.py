"""The training loop, top to bottom: batches, steps, evaluations, the schedule, checkpoints.

`fit` is one run. Everything that must survive a kill is in `TrainState`, which each checkpoint
holds whole, so a run resumed from a checkpoint ends exactly where the uninterrupted run would
have. The loop logs through a `Recorder` and knows nothing of MLflow.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rnnexp.config import RunConfig, as_tree
from rnnexp.data import Corpus, Split
from rnnexp.engine import build_model, load_params
from rnnexp.engine.optim import Optimizer, clip_global_norm, make_optimizer
from rnnexp.engine.schedules import checks_loss, halvings, learning_rate
from rnnexp.errors import DivergedError, UserError
from rnnexp.training import baseline, batches, checkpoint, evaluation, plots
from rnnexp.training.diagnostics import EvalHook, Evaluation, evaluation_hooks
from rnnexp.training.recorder import Recorder
from rnnexp.training.sampling import sample_sentences

log = logging.getLogger(__name__)

# A loss this many times that of uniform guessing (ln V) is a run that diverged, NaN or not: the
# engine's stable softmax keeps exploding weights' losses finite.
DIVERGED_FACTOR = 4.0
CHECKPOINT_ARTIFACTS = "checkpoints"


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
    config: dict  # the run's config as plain data, made once (OmegaConf takes milliseconds) for every checkpoint
    digests: dict[str, str]  # config_digest and data_digest: what binds each checkpoint to its run


@dataclass
class Data:
    """The corpus as the loop consumes it."""

    corpus: Corpus
    train_sentences: list[np.ndarray]
    chunks: batches.StreamChunks | None  # truncation=chunk: the training stream as parallel rows
    held_out: Split  # the validation split, or the training split for data without one (the tutorial's)
    held_out_name: str
    n_batches: int


class StopSignals:
    """Ctrl-C (SIGINT) or SIGTERM (a cluster's preemption) stops training after the current step.

    Stopping mid-step would checkpoint half-updated parameters; the loop instead checks
    `requested` after each step, saves a checkpoint and raises KeyboardInterrupt (the run ends
    KILLED). A second signal stops at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step (signal %d); signal again to stop at once", signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def fit(
    cfg: RunConfig,
    corpus: Corpus,
    recorder: Recorder,
    checkpoint_dir: Path,
    run_id: str,
    start: checkpoint.Checkpoint | None = None,
    stop: StopSignals | None = None,
    extra_hooks: Sequence[EvalHook] = (),
) -> float:
    """Train as `cfg` says (from `start` if given); log through `recorder`; return the best validation loss."""
    stop = stop or StopSignals()
    data = prepare_data(cfg, corpus)
    state = new_state(cfg, corpus) if start is None else restore_state(cfg, corpus, start, checkpoint_dir)
    hooks = [*evaluation_hooks(cfg.diagnostics), *extra_hooks]
    p = state.progress
    if p.step == 0 and p.position == 0:
        if cfg.baseline.enabled:
            recorder.log_metrics(baseline.baseline_metrics(corpus, cfg.eval.protocol, cfg.baseline), 0)
        evaluate(cfg, data, state, recorder, hooks, checkpoint_dir, run_id)
    while p.epoch < cfg.train.epochs and not p.stopped_early:
        train_epoch(cfg, data, state, recorder, checkpoint_dir, run_id, stop)
        p.epoch, p.position = p.epoch + 1, 0
        evaluate(cfg, data, state, recorder, hooks, checkpoint_dir, run_id)
    finish(cfg, data, state, recorder)
    return p.best_val_loss


# ---------------------------------------------------------------------- set-up
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


def train_counts(cfg: RunConfig, corpus: Corpus) -> np.ndarray | None:
    """The training split's word counts, which the class-based output bins its classes by (None otherwise)."""
    if cfg.model.output != "class":
        return None
    return np.bincount(corpus.splits["train"].stream(), minlength=len(corpus.vocab))


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


def binding_digests(cfg: RunConfig, corpus: Corpus) -> dict[str, str]:
    return {"config_digest": checkpoint.config_digest(as_tree(cfg)), "data_digest": corpus.digest}


# ---------------------------------------------------------------------- training
def train_epoch(
    cfg: RunConfig,
    data: Data,
    state: TrainState,
    recorder: Recorder,
    checkpoint_dir: Path,
    run_id: str,
    stop: StopSignals,
) -> None:
    p = state.progress
    if p.position == 0:
        state.order = state.rng.permutation(len(data.train_sentences))
        state.hidden = None
        p.epoch_loss, p.epoch_tokens = 0.0, 0
    bar = tqdm(
        total=data.n_batches,
        initial=p.position,
        desc=f"epoch {p.epoch + 1}/{cfg.train.epochs}",
        unit="batch",
        leave=False,
        disable=not sys.stderr.isatty(),
    )
    window = (time.perf_counter(), p.tokens)
    for index in range(p.position, data.n_batches):
        started = time.perf_counter()
        train_step(cfg, data, state, index)
        p.train_seconds += time.perf_counter() - started
        p.position = index + 1
        if stop.requested:
            save(state, checkpoint_dir / "last.npz", run_id, recorder)
            raise KeyboardInterrupt(f"stopped at step {p.step} with a checkpoint: continue with resume={run_id}")
        bar.update()
        if p.step % cfg.train.log_every == 0:
            window = log_training(cfg, data, state, recorder, window, bar)
        if cfg.train.checkpoint_every and p.step % cfg.train.checkpoint_every == 0:
            save(state, checkpoint_dir / "last.npz", run_id, recorder)
    bar.close()


def train_step(cfg: RunConfig, data: Data, state: TrainState, index: int) -> None:
    """One update: forward and backward on batch `index`, clip, step the optimiser."""
    p = state.progress
    if data.chunks is not None:
        x, y = data.chunks[index]
        mask = None
    else:
        x, y, mask = batches.sentence_batch(data.train_sentences, state.order, index, cfg.train.batch_size)
    where = f"at step {p.step + 1} (epoch {p.epoch + 1})"
    try:
        result = state.model.backprop(
            x, y, mask=mask, h0=state.hidden, reduction=cfg.train.reduction, sparse_u=cfg.model.sparse_u
        )
    except DivergedError as err:
        raise DivergedError(f"diverged {where}: {err}") from None
    check_diverged("training", result.loss, state.model.V, where)
    grad_norm = clip_global_norm(result.grads, cfg.optim.clip_norm)
    if not math.isfinite(grad_norm):
        raise DivergedError(
            f"diverged {where}: the gradient norm became {grad_norm}; lower the learning rate "
            "or clip gradients (optim.clip_norm)."
        )
    state.optimizer.step(state.model.params, result.grads, current_lr(cfg, data, p))
    if cfg.optim.average_from_epoch is not None and p.epoch >= cfg.optim.average_from_epoch:
        state.optimizer.accumulate_average(state.model.params)
    if data.chunks is not None:
        state.hidden = result.h_last
    p.step += 1
    p.tokens += result.n_tokens
    p.epoch_loss += result.loss * result.n_tokens
    p.epoch_tokens += result.n_tokens
    p.window_loss += result.loss * result.n_tokens
    p.window_tokens += result.n_tokens
    p.window_grad_norm += grad_norm
    p.window_steps += 1


def check_diverged(which: str, loss: float, vocab_size: int, where: str) -> None:
    """A loss that is not finite, or DIVERGED_FACTOR times worse than guessing uniformly, ends the run."""
    limit = DIVERGED_FACTOR * math.log(vocab_size)
    if not loss < limit:
        raise DivergedError(
            f"diverged {where}: the {which} loss reached {loss:.4g}, over {DIVERGED_FACTOR:g} × ln V = {limit:.3g} "
            "(worse than guessing); lower the learning rate or clip gradients (optim.clip_norm)."
        )


def current_lr(cfg: RunConfig, data: Data, p: Progress) -> float:
    """The schedule's rate: a pure function of progress and the monitored losses so far."""
    return learning_rate(cfg.schedule, cfg.optim.lr, p.epoch + p.position / data.n_batches, p.monitored_losses)


def log_training(
    cfg: RunConfig, data: Data, state: TrainState, recorder: Recorder, window: tuple[float, int], bar: tqdm
) -> tuple[float, int]:
    """The training metrics of the steps since the last call; returns the next window's start."""
    p = state.progress
    started, tokens_then = window
    now = time.perf_counter()
    loss = p.window_loss / p.window_tokens
    metrics = {
        "train_loss": loss,
        "lr": current_lr(cfg, data, p),
        "grad_norm": p.window_grad_norm / p.window_steps,
        "tokens_per_sec": (p.tokens - tokens_then) / max(now - started, 1e-9),
    }
    recorder.log_metrics(metrics, p.step)
    p.window_loss, p.window_tokens, p.window_grad_norm, p.window_steps = 0.0, 0, 0.0, 0
    if bar.disable:
        if p.step % (cfg.train.log_every * 10) == 0:
            log.info(
                "step %d  epoch %d  train_loss %.4f  lr %.3g  %.0f tokens/s",
                p.step,
                p.epoch + 1,
                loss,
                metrics["lr"],
                metrics["tokens_per_sec"],
            )
    else:
        bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(loss):.1f}", tok_s=f"{metrics['tokens_per_sec']:.0f}")
    return now, p.tokens


# ---------------------------------------------------------------------- evaluation
def held_out_loss(cfg: RunConfig, model: Any, split: Split) -> float:
    """The protocol's loss on a split: the number that is logged, selects the best model and feeds the schedule."""
    return evaluation.mean_nll(model, split, cfg.eval.protocol, cfg.eval.batch_size, cfg.eval.segment_length)


def evaluate(
    cfg: RunConfig,
    data: Data,
    state: TrainState,
    recorder: Recorder,
    hooks: Sequence[EvalHook],
    checkpoint_dir: Path,
    run_id: str,
) -> None:
    """After each epoch and before the first: validate, feed the schedule, keep the best, checkpoint.

    Once parameters are averaged (optim.average_from_epoch), the averaged model is the one that is
    validated, kept as the best and shown to the hooks.
    """
    with averaged_params(state):
        improved = evaluate_model(cfg, data, state, recorder, hooks)
    if improved:
        save(state, checkpoint_dir / "best.npz", run_id, recorder, params=state.best_params)
    if state.progress.epoch > 0:  # the iterate, not the average: what training continues from
        save(state, checkpoint_dir / "last.npz", run_id, recorder)
        recorder.log_artifact(checkpoint_dir / "last.npz", CHECKPOINT_ARTIFACTS)
        recorder.log_artifact(checkpoint_dir / "best.npz", CHECKPOINT_ARTIFACTS)


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


def evaluate_model(
    cfg: RunConfig, data: Data, state: TrainState, recorder: Recorder, hooks: Sequence[EvalHook]
) -> bool:
    """Validate the model as it is, log it, feed the schedule and keep it if it is the best so far (True)."""
    p = state.progress
    val_loss = held_out_loss(cfg, state.model, data.held_out)
    check_diverged("validation", val_loss, state.model.V, f"after epoch {p.epoch}")
    metrics = {"val_loss": val_loss, "val_ppl": math.exp(val_loss), "epoch": p.epoch}
    oracle = data.held_out.oracle_nll
    if oracle is not None:
        metrics["oracle_val_ppl"] = math.exp(oracle)
    if p.epoch_tokens:
        metrics["train_loss_epoch"] = p.epoch_loss / p.epoch_tokens
        metrics["train_ppl_epoch"] = math.exp(metrics["train_loss_epoch"])
    if checks_loss(cfg.schedule, p.epoch):
        train_split = data.corpus.splits["train"]
        monitored = val_loss if cfg.schedule.monitor == "valid" else held_out_loss(cfg, state.model, train_split)
        p.monitored_losses.append(monitored)
        metrics[f"schedule_{cfg.schedule.monitor}_loss"] = monitored
        metrics["lr_halvings"] = halvings(cfg.schedule, p.monitored_losses)
    improved = val_loss < p.best_val_loss
    if improved:
        p.best_val_loss, p.evaluations_since_best = val_loss, 0
        state.best_params = copy_params(state.model.params)
    elif p.epoch > 0:
        p.evaluations_since_best += 1
    patience = cfg.train.patience
    if patience is not None and p.evaluations_since_best >= patience and p.epoch < cfg.train.epochs:
        p.stopped_early = True
        metrics["stopped_early_epoch"] = p.epoch
        log.info("early stop after epoch %d: no better validation loss for %d evaluations", p.epoch, patience)
    metrics["best_val_ppl"] = math.exp(p.best_val_loss)
    recorder.log_metrics(metrics, p.step)
    final = p.epoch >= cfg.train.epochs or p.stopped_early
    lr = current_lr(cfg, data, p)
    for hook in hooks:
        hook(Evaluation(state.model, data.held_out, p.epoch, p.step, lr, final, recorder))
    p.history.append(
        {
            "epoch": p.epoch,
            "step": p.step,
            "val_loss": val_loss,
            "train_loss_epoch": metrics.get("train_loss_epoch"),
        }
    )
    if p.epoch > 0:
        log.info(
            "epoch %d/%d  step %d  val_loss %.4f  val_ppl %.2f%s",
            p.epoch,
            cfg.train.epochs,
            p.step,
            val_loss,
            metrics["val_ppl"],
            f"  (oracle {metrics['oracle_val_ppl']:.2f})" if oracle is not None else "",
        )
    return improved


def finish(cfg: RunConfig, data: Data, state: TrainState, recorder: Recorder) -> None:
    """Score the best model on the test split; write samples and curves."""
    p = state.progress
    load_params(state.model, state.best_params)
    test = data.corpus.splits["test"]
    metrics = {"tokens_per_sec_mean": p.tokens / max(p.train_seconds, 1e-9)} if p.train_seconds else {}
    if batches.usable(test.sentences):
        test_loss = held_out_loss(cfg, state.model, test)
        metrics.update(test_loss=test_loss, test_ppl=math.exp(test_loss))
        if test.oracle_nll is not None:
            metrics["oracle_test_ppl"] = math.exp(test.oracle_nll)
        log.info("test_ppl %.2f (best validation loss %.4f)", metrics["test_ppl"], p.best_val_loss)
    if cfg.baseline.enabled and data.held_out_name == "valid":
        model_nll = {
            name: evaluation.token_nll(
                state.model, data.corpus.splits[name], cfg.eval.protocol, cfg.eval.batch_size, cfg.eval.segment_length
            )
            for name in baseline.SCORED_SPLITS
            if batches.usable(data.corpus.splits[name].sentences)
        }
        metrics.update(baseline.interpolation_metrics(data.corpus, cfg.eval.protocol, cfg.baseline, model_nll))
    recorder.log_metrics(metrics, p.step)
    vocab = data.corpus.vocab
    if cfg.train.samples and vocab.start_id is not None:
        rng = np.random.default_rng(cfg.seed)
        sentences = sample_sentences(state.model, vocab, rng, cfg.train.samples, cfg.train.sample_max_len)
        recorder.log_text("\n".join(sentences) + "\n", "samples.txt")
    recorder.log_figure(plots.learning_curves(p.history, data.held_out.oracle_nll), "curves.png")


# ---------------------------------------------------------------------- checkpoints
def save(
    state: TrainState,
    path: Path,
    run_id: str,
    recorder: Recorder,
    params: dict[str, np.ndarray] | None = None,
) -> None:
    arrays = {"order": state.order, **state.model.output.buffers}  # buffers: the class output's word classes
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


def copy_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.copy(order="K") for name, value in params.items()}
