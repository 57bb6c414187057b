"""The training loop: batches, steps, evaluations, checkpoints and logging, in one plain place.

One call of `train` is one MLflow run. Everything the loop needs to continue is in `Progress`, the
model, the optimiser and the data-order generator, and all of it goes into each checkpoint, so a
run resumed from a checkpoint ends exactly where the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from rnnexp import batches, checkpoint, config, plots, schedule, tracking, trained
from rnnexp.data import Corpus, load_corpus
from rnnexp.diagnostics_hook import evaluation_hooks
from rnnexp.errors import UserError
from rnnexp.evaluate import mean_nll
from rnnexp.generate import sample_sentences
from rnnexp.model import RNNLM, DivergedError
from rnnexp.optim import clip_global_norm, make_optimizer

log = logging.getLogger(__name__)

# A loss this many times that of uniform guessing (ln V) is a run that diverged, NaN or not: the
# engine's stable softmax keeps exploding weights' losses finite.
DIVERGED_FACTOR = 4.0

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
    history: list[dict] = field(default_factory=list)  # one entry per evaluation, for the curves


@dataclass
class Evaluation:
    """What a per-evaluation hook gets: the model after `step` updates and the run to log into."""

    model: RNNLM
    corpus: Corpus
    epoch: int  # epochs completed (0: before training)
    step: int
    run: tracking.RunLogger


EvalHook = Callable[[Evaluation], None]


def train(cfg: DictConfig, parent_run_id: str | None = None, run_name: str | None = None,
          tags: Mapping[str, str] | None = None, eval_hooks: Sequence[EvalHook] = ()) -> float:
    """Train one run as `cfg` says (or continue the one `cfg.resume` names); return the best validation loss."""
    run_cfg = config.validate(cfg)
    run_cfg.train.checkpoint_dir = str(Path(run_cfg.train.checkpoint_dir).resolve())
    client = tracking.connect(tracking.resolve_tracking_uri(run_cfg.tracking_uri))
    start = None
    if run_cfg.resume:
        start = find_checkpoint(run_cfg.resume, client, Path(run_cfg.train.checkpoint_dir))
        saved = config.saved(start.meta["config"])
        saved.resume, saved.tracking_uri = run_cfg.resume, run_cfg.tracking_uri
        saved.train.checkpoint_dir = run_cfg.train.checkpoint_dir
        run_cfg = config.validate(saved)
        run = tracking.reopen_run(client, start.meta["run_id"])
        log.info("resuming run %s at step %d", run.run_id, start.meta["progress"]["step"])
    else:
        name = run_name or run_cfg.run_name
        run = tracking.create_run(client, run_cfg.experiment_name, name, parent_run_id, tags or {})
    run.flush_every_s = run_cfg.train.flush_every_s
    threads = threadpool_limits(run_cfg.blas_threads, user_api="blas") if run_cfg.blas_threads else nullcontext()
    with tracking.run_status(run), threads, StopSignals() as stop:
        return Trainer(run_cfg, run, start, eval_hooks, stop).fit()


def find_checkpoint(resume: str, client: MlflowClient, checkpoint_dir: Path) -> checkpoint.Checkpoint:
    """The checkpoint at a .npz path, or a run id's last one (the local copy, else the run's artifact)."""
    start = checkpoint.load(Path(resume)) if resume.endswith(".npz") else None
    run_id = start.meta["run_id"] if start else resume
    if tracking.get_run(client, run_id).info.status == "FINISHED":
        raise UserError(f"run {run_id} has finished: there is nothing to resume; start a new run instead.")
    return start or checkpoint.load(trained.local_checkpoint(client, run_id, "last.npz", checkpoint_dir))


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

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step (signal %d); signal again to stop at once", signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """The state of one run while it trains; `fit` is the loop."""

    def __init__(self, cfg: config.RunConfig, run: tracking.RunLogger, start: checkpoint.Checkpoint | None,
                 eval_hooks: Sequence[EvalHook], stop: StopSignals):
        self.cfg, self.run, self.stop = cfg, run, stop
        self.eval_hooks = [*evaluation_hooks(cfg.diagnostics, self._lr, cfg.train.epochs), *eval_hooks]
        self.config_tree = OmegaConf.to_container(OmegaConf.structured(cfg))
        self.corpus = load_corpus(cfg.dataset, seed=cfg.seed)
        self.sentences = {name: batches.usable(split.sentences) for name, split in self.corpus.splits.items()}
        self.train_sentences = self.sentences["train"]
        if not self.train_sentences:
            raise UserError("the training split has no sentence with two tokens or more: check the dataset config.")
        self.valid_split = "valid" if self.sentences["valid"] else "train"
        m = cfg.model
        self.model = RNNLM(len(self.corpus.vocab), m.hidden_dim, m.bptt_truncate, m.truncation, m.dtype, m.seed)
        o = cfg.optim
        self.optimizer = make_optimizer(o.name, momentum=o.momentum, rho=o.rho, beta1=o.beta1, beta2=o.beta2, eps=o.eps)
        self.chunks = None
        if m.truncation == "chunk":
            stream = self.corpus.splits["train"].stream()
            self.chunks = batches.StreamChunks(stream, cfg.train.batch_size, m.bptt_truncate)
            self.n_batches = len(self.chunks)
        else:
            self.n_batches = batches.n_sentence_batches(len(self.train_sentences), cfg.train.batch_size)
        self.checkpoint_dir = Path(cfg.train.checkpoint_dir).resolve() / run.run_id
        self.order = np.arange(len(self.train_sentences))
        self.hidden = None
        self.window_start = (time.perf_counter(), 0)
        if start is None:
            self.progress = Progress()
            self.rng = np.random.default_rng(cfg.seed)
            self.best_params = copy_params(self.model.params)
            self._log_run_description()
        else:
            self._restore(start)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> float:
        p = self.progress
        if p.step == 0 and p.position == 0:
            self._end_of_epoch()
        while p.epoch < self.cfg.train.epochs:
            self._train_epoch()
            p.epoch, p.position = p.epoch + 1, 0
            self._end_of_epoch()
        self._finish()
        return p.best_val_loss

    def _train_epoch(self) -> None:
        p, cfg = self.progress, self.cfg
        if p.position == 0:
            self.order = self.rng.permutation(len(self.train_sentences))
            self.hidden = None
            p.epoch_loss, p.epoch_tokens = 0.0, 0
        bar = tqdm(total=self.n_batches, initial=p.position, desc=f"epoch {p.epoch + 1}/{cfg.train.epochs}",
                   unit="batch", leave=False, disable=not sys.stderr.isatty())
        self.window_start = (time.perf_counter(), p.tokens)
        for index in range(p.position, self.n_batches):
            self._step(index)
            p.position = index + 1
            if self.stop.requested:
                self._save("last.npz")
                raise KeyboardInterrupt(
                    f"stopped at step {p.step} with a checkpoint: continue with resume={self.run.run_id}")
            bar.update()
            if p.step % cfg.train.log_every == 0:
                self._log_training(bar)
            if cfg.train.checkpoint_every and p.step % cfg.train.checkpoint_every == 0:
                self._save("last.npz")
        bar.close()

    def _step(self, index: int) -> None:
        p, cfg = self.progress, self.cfg
        if self.chunks:
            x, y = self.chunks[index]
            mask = None
        else:
            x, y, mask = batches.sentence_batch(self.train_sentences, self.order, index, cfg.train.batch_size)
        try:
            result = self.model.backprop(x, y, mask=mask, h0=self.hidden, reduction=cfg.train.reduction,
                                         sparse_u=cfg.model.sparse_u)
        except DivergedError as err:
            raise DivergedError(f"diverged at step {p.step + 1} (epoch {p.epoch + 1}): {err}") from None
        self._check_diverged("training", result.loss, p.step + 1)
        grad_norm = clip_global_norm(result.grads, cfg.optim.clip_norm)
        if not math.isfinite(grad_norm):
            raise DivergedError(f"diverged at step {p.step + 1} (epoch {p.epoch + 1}): the gradient norm became "
                                f"{grad_norm}; lower the learning rate or clip gradients (optim.clip_norm).")
        self.optimizer.step(self.model.params, result.grads, self._lr())
        if self.chunks:
            self.hidden = result.h_last
        p.step += 1
        p.tokens += result.n_tokens
        p.epoch_loss += result.loss * result.n_tokens
        p.epoch_tokens += result.n_tokens
        p.window_loss += result.loss * result.n_tokens
        p.window_tokens += result.n_tokens
        p.window_grad_norm += grad_norm
        p.window_steps += 1

    def _check_diverged(self, which: str, loss: float, step: int) -> None:
        """A loss that is not finite, or DIVERGED_FACTOR times worse than guessing uniformly, ends the run."""
        limit = DIVERGED_FACTOR * math.log(self.model.V)
        if not loss < limit:
            raise DivergedError(
                f"diverged at step {step} (epoch {self.progress.epoch + 1}): the {which} loss reached {loss:.4g}, "
                f"over {DIVERGED_FACTOR:g} × ln V = {limit:.3g} (worse than guessing); lower the learning rate "
                "or clip gradients (optim.clip_norm)."
            )

    def _lr(self) -> float:
        p = self.progress
        epoch = p.epoch + p.position / self.n_batches
        return schedule.learning_rate(self.cfg.schedule, self.cfg.optim.lr, epoch, p.monitored_losses)

    # ------------------------------------------------------------------ logging
    def _log_training(self, bar: tqdm) -> None:
        p = self.progress
        started, tokens_then = self.window_start
        now = time.perf_counter()
        loss = p.window_loss / p.window_tokens
        metrics = {
            "train_loss": loss,
            "lr": self._lr(),
            "grad_norm": p.window_grad_norm / p.window_steps,
            "tokens_per_sec": (p.tokens - tokens_then) / max(now - started, 1e-9),
        }
        self.run.log_metrics(metrics, p.step)
        self.window_start = (now, p.tokens)
        p.window_loss, p.window_tokens, p.window_grad_norm, p.window_steps = 0.0, 0, 0.0, 0
        if bar.disable:
            if p.step % (self.cfg.train.log_every * 10) == 0:
                log.info("step %d  epoch %d  train_loss %.4f  lr %.3g  %.0f tokens/s", p.step, p.epoch + 1, loss,
                         metrics["lr"], metrics["tokens_per_sec"])
        else:
            bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(loss):.1f}", tok_s=f"{metrics['tokens_per_sec']:.0f}")

    def _end_of_epoch(self) -> None:
        """Evaluate, feed the schedule, keep the best model, checkpoint: after each epoch and before the first."""
        p, cfg = self.progress, self.cfg
        val_loss = self._split_loss(self.valid_split)
        self._check_diverged("validation", val_loss, p.step)
        metrics = {"val_loss": val_loss, "val_ppl": math.exp(val_loss), "epoch": p.epoch}
        oracle = self.corpus.splits[self.valid_split].oracle_nll
        if oracle is not None:
            metrics["oracle_val_ppl"] = math.exp(oracle)
        if p.epoch_tokens:
            metrics["train_loss_epoch"] = p.epoch_loss / p.epoch_tokens
            metrics["train_ppl_epoch"] = math.exp(metrics["train_loss_epoch"])
        if schedule.checks_loss(cfg.schedule, p.epoch):
            monitored = val_loss if cfg.schedule.monitor == "valid" else self._split_loss("train")
            p.monitored_losses.append(monitored)
            metrics[f"schedule_{cfg.schedule.monitor}_loss"] = monitored
            metrics["lr_halvings"] = schedule.halvings(cfg.schedule, p.monitored_losses)
        self.run.log_metrics(metrics, p.step)
        for hook in self.eval_hooks:
            hook(Evaluation(self.model, self.corpus, p.epoch, p.step, self.run))
        p.history.append({"epoch": p.epoch, "val_loss": val_loss, "train_loss_epoch": metrics.get("train_loss_epoch")})
        if val_loss < p.best_val_loss:
            p.best_val_loss = val_loss
            self.best_params = copy_params(self.model.params)
            self._save("best.npz")
        if p.epoch > 0:
            self._save("last.npz")
            self.run.log_artifact(self.checkpoint_dir / "last.npz", trained.CHECKPOINT_ARTIFACTS)
            self.run.log_artifact(self.checkpoint_dir / "best.npz", trained.CHECKPOINT_ARTIFACTS)
            log.info("epoch %d/%d  step %d  val_loss %.4f  val_ppl %.2f%s", p.epoch, cfg.train.epochs, p.step, val_loss,
                     metrics["val_ppl"], f"  (oracle {metrics['oracle_val_ppl']:.2f})" if oracle is not None else "")

    def _split_loss(self, split: str) -> float:
        return mean_nll(self.model, self.sentences[split], self.cfg.train.eval_batch_size)

    def _finish(self) -> None:
        """Score the best model on the test split, write samples and curves."""
        p, cfg = self.progress, self.cfg
        for name, value in self.best_params.items():
            self.model.params[name][...] = value
        test = self.corpus.splits["test"]
        if self.sentences["test"]:
            test_loss = self._split_loss("test")
            metrics = {"test_loss": test_loss, "test_ppl": math.exp(test_loss)}
            if test.oracle_nll is not None:
                metrics["oracle_test_ppl"] = math.exp(test.oracle_nll)
            self.run.log_metrics(metrics, p.step)
            log.info("test_ppl %.2f (best validation loss %.4f)", metrics["test_ppl"], p.best_val_loss)
        if cfg.train.samples and self.corpus.vocab.start_id is not None:
            rng = np.random.default_rng(cfg.seed)
            sentences = sample_sentences(self.model, self.corpus.vocab, rng, cfg.train.samples,
                                         cfg.train.sample_max_len)
            self.run.log_text("\n".join(sentences) + "\n", "samples.txt")
        oracle = self.corpus.splits[self.valid_split].oracle_nll
        self.run.log_figure(plots.learning_curves(p.history, oracle), "curves.png")

    def _log_run_description(self) -> None:
        """Params, tags, config and vocabulary: logged once, when the run starts."""
        self.run.log_params({**tracking.flat_params(self.config_tree), **self.corpus.params,
                             "vocab_size_actual": str(len(self.corpus.vocab))})
        self.run.set_tags({**tracking.environment_tags(), "dataset_digest": self.corpus.digest,
                           "dataset": self.corpus.name, "validation_split": self.valid_split})
        self.run.log_dataset(self.corpus.name, self.corpus.digest, self.corpus.source or self.corpus.name)
        self.run.log_text(OmegaConf.to_yaml(self.config_tree), "config.yaml")
        self.run.log_text(self.corpus.vocab.to_json(), trained.VOCAB_ARTIFACT)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, name: str) -> None:
        params = self.best_params if name == "best.npz" else self.model.params
        arrays = {"order": self.order}
        if self.hidden is not None:
            arrays["hidden"] = self.hidden
        meta = {
            "run_id": self.run.run_id,
            "config": self.config_tree,
            "progress": asdict(self.progress),
            "rng": checkpoint.generator_state(self.rng),
            "pending_metrics": self.run.pending(),  # a resumed run logs only later steps itself
        }
        saved = checkpoint.Checkpoint(params, self.optimizer.state_dict(), meta, arrays)
        checkpoint.save(self.checkpoint_dir / name, saved)

    def _restore(self, start: checkpoint.Checkpoint) -> None:
        for name, value in start.params.items():
            self.model.params[name][...] = value
        self.optimizer.load_state_dict(start.optimizer)
        self.progress = Progress(**start.meta["progress"])
        self.rng = checkpoint.restore_generator(start.meta["rng"])
        self.run.log_pending(start.meta["pending_metrics"])
        self.order = start.arrays["order"]
        self.hidden = start.arrays.get("hidden")
        best = self.checkpoint_dir / "best.npz"
        source = checkpoint.load(best).params if best.is_file() else start.params
        self.best_params = {name: value.astype(self.model.dtype) for name, value in source.items()}


def copy_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.copy(order="K") for name, value in params.items()}
