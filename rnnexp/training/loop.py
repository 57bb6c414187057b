"""The training loop, top to bottom: batches, steps, evaluations, the schedule, checkpoints.

`fit` is one run, driven by a `Trainer` that holds what every step of it shares. Everything that
must survive a kill is in its `TrainState`, which each checkpoint holds whole, so a run resumed
from a checkpoint ends exactly where the uninterrupted run would have. The loop logs through a
`Recorder` and knows nothing of MLflow.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rnnexp.config import RunConfig
from rnnexp.data import Corpus, Split
from rnnexp.engine import load_params
from rnnexp.engine.optim import clip_global_norm
from rnnexp.engine.schedules import checks_loss, halvings, learning_rate
from rnnexp.errors import DivergedError
from rnnexp.training import baseline, batches, checkpoint, evaluation, plots
from rnnexp.training.diagnostics import EvalHook, Evaluation, evaluation_hooks
from rnnexp.training.recorder import Recorder
from rnnexp.training.sampling import sample_sentences
from rnnexp.training.state import (
    Data,
    Progress,
    TrainState,
    averaged_params,
    copy_params,
    new_state,
    prepare_data,
    restore_state,
    save,
)

log = logging.getLogger(__name__)

# A loss this many times that of uniform guessing (ln V) is a run that diverged, NaN or not: the
# engine's stable softmax keeps exploding weights' losses finite.
DIVERGED_FACTOR = 4.0
CHECKPOINT_ARTIFACTS = "checkpoints"


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
    data = prepare_data(cfg, corpus)
    state = new_state(cfg, corpus) if start is None else restore_state(cfg, corpus, start, checkpoint_dir)
    hooks = [*evaluation_hooks(cfg.diagnostics), *extra_hooks]
    return Trainer(cfg, data, state, recorder, checkpoint_dir, run_id, stop or StopSignals(), hooks).fit()


def held_out_loss(cfg: RunConfig, model: Any, split: Split) -> float:
    """The protocol's loss on a split: the number that is logged, selects the best model and feeds the schedule."""
    return evaluation.mean_nll(model, split, cfg.eval.protocol, cfg.eval.batch_size, cfg.eval.segment_length)


def check_diverged(which: str, loss: float, vocab_size: int, where: str) -> None:
    """A loss that is not finite, or DIVERGED_FACTOR times worse than guessing uniformly, ends the run."""
    limit = DIVERGED_FACTOR * math.log(vocab_size)
    if not loss < limit:
        raise DivergedError(
            f"diverged {where}: the {which} loss reached {loss:.4g}, over {DIVERGED_FACTOR:g} × ln V = {limit:.3g} "
            "(worse than guessing); lower the learning rate or clip gradients (optim.clip_norm)."
        )


@dataclass
class Trainer:
    """One run's training: what every epoch, step and evaluation of it reads and updates."""

    cfg: RunConfig
    data: Data
    state: TrainState
    recorder: Recorder
    checkpoint_dir: Path
    run_id: str
    stop: StopSignals
    hooks: Sequence[EvalHook]

    @property
    def progress(self) -> Progress:
        return self.state.progress

    def fit(self) -> float:
        """Evaluate the untrained model, then train and evaluate epoch by epoch; return the best validation loss."""
        p = self.progress
        if p.step == 0 and p.position == 0:
            if self.cfg.baseline.enabled:
                metrics = baseline.baseline_metrics(self.data.corpus, self.cfg.eval.protocol, self.cfg.baseline)
                self.recorder.log_metrics(metrics, 0)
            self.evaluate()
        while p.epoch < self.cfg.train.epochs and not p.stopped_early:
            self.train_epoch()
            p.epoch, p.position = p.epoch + 1, 0
            self.evaluate()
        self.finish()
        return p.best_val_loss

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> None:
        """The epoch's batches from where it stands; a stop request checkpoints and ends the run."""
        p = self.progress
        if p.position == 0:
            self.state.order = self.state.rng.permutation(len(self.data.train_sentences))
            self.state.hidden = None
            p.epoch_loss, p.epoch_tokens = 0.0, 0
        bar = tqdm(
            total=self.data.n_batches,
            initial=p.position,
            desc=f"epoch {p.epoch + 1}/{self.cfg.train.epochs}",
            unit="batch",
            leave=False,
            disable=not sys.stderr.isatty(),
        )
        window = (time.perf_counter(), p.tokens)
        for index in range(p.position, self.data.n_batches):
            started = time.perf_counter()
            self.train_step(index)
            p.train_seconds += time.perf_counter() - started
            p.position = index + 1
            if self.stop.requested:
                self.save_last()
                raise KeyboardInterrupt(
                    f"stopped at step {p.step} with a checkpoint: continue with resume={self.run_id}"
                )
            bar.update()
            if p.step % self.cfg.train.log_every == 0:
                window = self.log_training(window, bar)
            if self.cfg.train.checkpoint_every and p.step % self.cfg.train.checkpoint_every == 0:
                self.save_last()
        bar.close()

    def train_step(self, index: int) -> None:
        """One update: forward and backward on batch `index`, clip, step the optimiser."""
        cfg, state, p = self.cfg, self.state, self.progress
        if self.data.chunks is not None:
            x, y = self.data.chunks[index]
            mask = None
        else:
            x, y, mask = batches.sentence_batch(self.data.train_sentences, state.order, index, cfg.train.batch_size)
        where = f"at step {p.step + 1} (epoch {p.epoch + 1})"
        try:
            result = state.model.backprop(
                x, y, mask=mask, h0=state.hidden, reduction=cfg.train.reduction, sparse_u=cfg.model.sparse_u
            )
        except DivergedError as err:
            raise DivergedError(f"diverged {where}: {err}") from None
        check_diverged("training", result.loss, state.model.vocab_size, where)
        grad_norm = clip_global_norm(result.grads, cfg.optim.clip_norm)
        if not math.isfinite(grad_norm):
            raise DivergedError(
                f"diverged {where}: the gradient norm became {grad_norm}; lower the learning rate "
                "or clip gradients (optim.clip_norm)."
            )
        state.optimizer.step(state.model.params, result.grads, self.current_lr())
        if cfg.optim.average_from_epoch is not None and p.epoch >= cfg.optim.average_from_epoch:
            state.optimizer.accumulate_average(state.model.params)
        if self.data.chunks is not None:
            state.hidden = result.h_last
        p.step += 1
        p.tokens += result.n_tokens
        p.epoch_loss += result.loss * result.n_tokens
        p.epoch_tokens += result.n_tokens
        p.window_loss += result.loss * result.n_tokens
        p.window_tokens += result.n_tokens
        p.window_grad_norm += grad_norm
        p.window_steps += 1

    def current_lr(self) -> float:
        """The schedule's rate: a pure function of progress and the monitored losses so far."""
        p = self.progress
        epochs_done = p.epoch + p.position / self.data.n_batches
        return learning_rate(self.cfg.schedule, self.cfg.optim.lr, epochs_done, p.monitored_losses)

    def log_training(self, window: tuple[float, int], bar: tqdm) -> tuple[float, int]:
        """The training metrics of the steps since the last call; returns the next window's start."""
        p = self.progress
        started, tokens_then = window
        now = time.perf_counter()
        loss = p.window_loss / p.window_tokens
        metrics = {
            "train_loss": loss,
            "lr": self.current_lr(),
            "grad_norm": p.window_grad_norm / p.window_steps,
            "tokens_per_sec": (p.tokens - tokens_then) / max(now - started, 1e-9),
        }
        self.recorder.log_metrics(metrics, p.step)
        p.window_loss, p.window_tokens, p.window_grad_norm, p.window_steps = 0.0, 0, 0.0, 0
        if not bar.disable:
            bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(loss):.1f}", tok_s=f"{metrics['tokens_per_sec']:.0f}")
        elif p.step % (self.cfg.train.log_every * 10) == 0:
            message = "step %d  epoch %d  train_loss %.4f  lr %.3g  %.0f tokens/s"
            log.info(message, p.step, p.epoch + 1, loss, metrics["lr"], metrics["tokens_per_sec"])
        return now, p.tokens

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> None:
        """After each epoch and before the first: score, feed the schedule, keep the best, stop early if
        patience ran out, log, run the hooks, checkpoint.

        Once parameters are averaged (optim.average_from_epoch), the averaged model is the one that is
        scored, kept as the best and shown to the hooks.
        """
        with averaged_params(self.state):
            val_loss = self.score()
            metrics = self.score_metrics(val_loss)
            metrics.update(self.feed_schedule(val_loss))
            improved = self.keep_if_best(val_loss)
            metrics.update(self.stop_if_patience_ran_out())
            metrics["best_val_ppl"] = math.exp(self.progress.best_val_loss)
            self.recorder.log_metrics(metrics, self.progress.step)
            self.run_hooks()
        self.record_evaluation(metrics)
        self.save_checkpoints(improved)

    def score(self) -> float:
        """The protocol's validation loss of the model as it is; a diverged one ends the run."""
        val_loss = held_out_loss(self.cfg, self.state.model, self.data.held_out)
        check_diverged("validation", val_loss, self.state.model.vocab_size, f"after epoch {self.progress.epoch}")
        return val_loss

    def score_metrics(self, val_loss: float) -> dict[str, float]:
        """The validation score as logged, beside the oracle's and the epoch's training loss."""
        p = self.progress
        metrics = {"val_loss": val_loss, "val_ppl": math.exp(val_loss), "epoch": p.epoch}
        oracle = self.data.held_out.oracle_nll
        if oracle is not None:
            metrics["oracle_val_ppl"] = math.exp(oracle)
        if p.epoch_tokens:
            metrics["train_loss_epoch"] = p.epoch_loss / p.epoch_tokens
            metrics["train_ppl_epoch"] = math.exp(metrics["train_loss_epoch"])
        return metrics

    def feed_schedule(self, val_loss: float) -> dict[str, float]:
        """Give the schedule the loss it monitors, if it checks one after this epoch; returns its metrics."""
        schedule, p = self.cfg.schedule, self.progress
        if not checks_loss(schedule, p.epoch):
            return {}
        if schedule.monitor == "valid":
            monitored = val_loss
        else:
            monitored = held_out_loss(self.cfg, self.state.model, self.data.corpus.splits["train"])
        p.monitored_losses.append(monitored)
        return {f"schedule_{schedule.monitor}_loss": monitored, "lr_halvings": halvings(schedule, p.monitored_losses)}

    def keep_if_best(self, val_loss: float) -> bool:
        """Keep the model's parameters if no earlier evaluation scored better (True); count those that did not."""
        p = self.progress
        if val_loss < p.best_val_loss:
            p.best_val_loss, p.evaluations_since_best = val_loss, 0
            self.state.best_params = copy_params(self.state.model.params)
            return True
        if p.epoch > 0:
            p.evaluations_since_best += 1
        return False

    def stop_if_patience_ran_out(self) -> dict[str, float]:
        """train.patience evaluations without a better score stop the run, unless its last epoch is done anyway."""
        p, patience = self.progress, self.cfg.train.patience
        if patience is None or p.evaluations_since_best < patience or p.epoch >= self.cfg.train.epochs:
            return {}
        p.stopped_early = True
        log.info("early stop after epoch %d: no better validation loss for %d evaluations", p.epoch, patience)
        return {"stopped_early_epoch": p.epoch}

    def run_hooks(self) -> None:
        """Show the evaluated model to the hooks: diagnostics, and the protocols that score it further."""
        p = self.progress
        final = p.epoch >= self.cfg.train.epochs or p.stopped_early
        evaluated = Evaluation(
            self.state.model, self.data.held_out, p.epoch, p.step, self.current_lr(), final, self.recorder
        )
        for hook in self.hooks:
            hook(evaluated)

    def record_evaluation(self, metrics: dict[str, float]) -> None:
        """Add the evaluation to the curves' history and, after training began, to the log."""
        p = self.progress
        val_loss = metrics["val_loss"]
        train_loss = metrics.get("train_loss_epoch")
        p.history.append({"epoch": p.epoch, "step": p.step, "val_loss": val_loss, "train_loss_epoch": train_loss})
        if p.epoch > 0:
            oracle = f"  (oracle {metrics['oracle_val_ppl']:.2f})" if "oracle_val_ppl" in metrics else ""
            message = "epoch %d/%d  step %d  val_loss %.4f  val_ppl %.2f%s"
            log.info(message, p.epoch, self.cfg.train.epochs, p.step, val_loss, metrics["val_ppl"], oracle)

    def save_checkpoints(self, improved: bool) -> None:
        """Save the best model if this evaluation found it, and after an epoch the state to continue from."""
        if improved:
            best = self.checkpoint_dir / "best.npz"
            save(self.state, best, self.run_id, self.recorder, params=self.state.best_params)
        if self.progress.epoch > 0:  # the iterate, not the average: what training continues from
            self.save_last()
            self.recorder.log_artifact(self.checkpoint_dir / "last.npz", CHECKPOINT_ARTIFACTS)
            self.recorder.log_artifact(self.checkpoint_dir / "best.npz", CHECKPOINT_ARTIFACTS)

    def save_last(self) -> None:
        save(self.state, self.checkpoint_dir / "last.npz", self.run_id, self.recorder)

    # ------------------------------------------------------------------ the end
    def finish(self) -> None:
        """Score the best model on the test split and mix it with the baseline; write samples and curves."""
        load_params(self.state.model, self.state.best_params)
        metrics = self.test_metrics()
        if self.cfg.baseline.enabled and self.data.held_out_name == "valid":
            metrics.update(self.baseline_mix_metrics())
        self.recorder.log_metrics(metrics, self.progress.step)
        vocab = self.data.corpus.vocab
        if self.cfg.train.samples and vocab.start_id is not None:
            rng = np.random.default_rng(self.cfg.seed)
            sentences = sample_sentences(
                self.state.model, vocab, rng, self.cfg.train.samples, self.cfg.train.sample_max_len
            )
            self.recorder.log_text("\n".join(sentences) + "\n", "samples.txt")
        curves = plots.learning_curves(self.progress.history, self.data.held_out.oracle_nll)
        self.recorder.log_figure(curves, "curves.png")

    def test_metrics(self) -> dict[str, float]:
        """The run's mean training speed and the model's test score, where there is a test split."""
        p = self.progress
        metrics = {"tokens_per_sec_mean": p.tokens / max(p.train_seconds, 1e-9)} if p.train_seconds else {}
        test = self.data.corpus.splits["test"]
        if batches.usable(test.sentences):
            test_loss = held_out_loss(self.cfg, self.state.model, test)
            metrics.update(test_loss=test_loss, test_ppl=math.exp(test_loss))
            if test.oracle_nll is not None:
                metrics["oracle_test_ppl"] = math.exp(test.oracle_nll)
            log.info("test_ppl %.2f (best validation loss %.4f)", metrics["test_ppl"], p.best_val_loss)
        return metrics

    def baseline_mix_metrics(self) -> dict[str, float]:
        """The model's per-token losses interpolated with the n-gram baseline's, on each split it scores."""
        eval_cfg, splits = self.cfg.eval, self.data.corpus.splits
        model_nll = {
            name: evaluation.token_nll(
                self.state.model, splits[name], eval_cfg.protocol, eval_cfg.batch_size, eval_cfg.segment_length
            )
            for name in baseline.SCORED_SPLITS
            if batches.usable(splits[name].sentences)
        }
        return baseline.interpolation_metrics(self.data.corpus, eval_cfg.protocol, self.cfg.baseline, model_nll)
