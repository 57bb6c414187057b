"""Per-evaluation hooks that log the vanishing gradient and the long-range dependency to MLflow.

`GradientDiagnostics` measures, on one fixed held-out batch, how far back the error reaches
(`grad_decay_k<k>`), the recurrent matrix's spectrum, tanh saturation, per-parameter gradient norms
and the update-to-weight ratios of an SGD step, and draws `gradient_decay.png` (decay against k,
one line per evaluation). The metrics cost milliseconds; drawing costs about half a second, so the
figure is redrawn at most once per `figure_interval_s` and always after the last evaluation.
`DependencyLoss` scores the validation split's dependent targets (the synthetic language's echo
words) against the oracle. `evaluation_hooks` builds both from the `diagnostics` config node.
Neither touches the parameters or any random generator of the trainer, so a run logs the same
training curve with or without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rnnexp import batches, diagnostics
from rnnexp.data import Split
from rnnexp.errors import UserError
from rnnexp.model import RNNLM

if TYPE_CHECKING:
    from rnnexp.train import EvalHook, Evaluation

DECAY_FIGURE = "gradient_decay.png"


@dataclass
class DiagnosticsConfig:
    """The `diagnostics` config node: on by default, cheap enough to leave on."""

    enabled: bool = True
    max_depth: int = 20  # K: the gradient norm is logged for k = 0..K steps back
    batch_size: int = 32  # held-out sentences the diagnostics are measured on
    # Least time between redraws of gradient_decay.png (always redrawn after the last evaluation);
    # 0: at every evaluation, null: never.
    figure_interval_s: float | None = 60.0


def validate(cfg: DiagnosticsConfig) -> None:
    if cfg.max_depth < 0:
        raise UserError(f"diagnostics.max_depth must be >= 0, got {cfg.max_depth}.")
    if cfg.batch_size < 1:
        raise UserError(f"diagnostics.batch_size must be >= 1, got {cfg.batch_size}.")
    if cfg.figure_interval_s is not None and cfg.figure_interval_s < 0:
        raise UserError(f"diagnostics.figure_interval_s must be >= 0 or null, got {cfg.figure_interval_s}.")


def evaluation_hooks(cfg: DiagnosticsConfig, learning_rate: Callable[[], float], epochs: int) -> list[EvalHook]:
    """The hooks for a run of `epochs` epochs; `learning_rate` returns the trainer's current one.

    The dependent-target losses are logged whatever `enabled` says: they cost less than the
    trainer's own validation pass, and without them a synthetic run's memory cannot be judged.
    """
    validate(cfg)
    gradients = [GradientDiagnostics(cfg, learning_rate, epochs)] if cfg.enabled else []
    return [*gradients, DependencyLoss()]


def held_out_split(evaluation: Evaluation) -> str:
    """The validation split, or the training split for a dataset without held-out data (the tutorial's)."""
    return "valid" if batches.usable(evaluation.corpus.splits["valid"].sentences) else "train"


class GradientDiagnostics:
    """Gradient flow, spectrum and saturation on the same held-out batch at every evaluation.

    `grad_decay_k<k>` follows the full chain whatever the training truncation. The gradient norms
    and update ratios use the model's own truncation (chunk mode: each sentence one chunk) and the
    gradient of the batch's mean loss, so with `train.reduction=sum` the real steps are larger by
    about the tokens per batch. After a resume the figure shows the evaluations since the resume;
    the metrics hold them all.
    """

    def __init__(self, cfg: DiagnosticsConfig, learning_rate: Callable[[], float], epochs: int):
        self.cfg, self.learning_rate, self.epochs = cfg, learning_rate, epochs
        self.batch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.decay_by_epoch: dict[int, np.ndarray] = {}
        self.last_drawn = time.monotonic()
        self.seconds = 0.0  # time spent in this hook, to report its cost

    def __call__(self, evaluation: Evaluation) -> None:
        started = time.perf_counter()
        model, run = evaluation.model, evaluation.run
        if self.batch is None:
            self.batch = self._held_out_batch(evaluation)
        x, y, mask = self.batch
        decay = diagnostics.gradient_decay(model, x, y, mask, self.cfg.max_depth)
        metrics = {f"grad_decay_k{k}": float(value) for k, value in enumerate(decay) if np.isfinite(value)}
        metrics.update(diagnostics.weight_spectrum(model.params["W"]))
        step = model.backprop(x, y, mask)
        metrics["tanh_saturation"] = diagnostics.saturation(step.states, mask)
        metrics.update(diagnostics.gradient_norms(step.grads))
        metrics.update(sgd_update_ratios(model.params, step.grads, self.learning_rate()))
        run.log_metrics(metrics, evaluation.step)
        self.decay_by_epoch[evaluation.epoch] = decay
        now, interval = time.monotonic(), self.cfg.figure_interval_s
        if interval is not None and (evaluation.epoch >= self.epochs or now - self.last_drawn >= interval):
            self._log_figure(evaluation)
            self.last_drawn = now
        self.seconds += time.perf_counter() - started

    def _held_out_batch(self, evaluation: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The split's longest sentences (the first of equal length), so that deep k have outputs to average."""
        sentences = batches.usable(evaluation.corpus.splits[held_out_split(evaluation)].sentences)
        longest_first = np.argsort([-len(s) for s in sentences], kind="stable")[: self.cfg.batch_size]
        return batches.pad([sentences[i] for i in sorted(longest_first)])

    def _log_figure(self, evaluation: Evaluation) -> None:
        import matplotlib.pyplot as plt

        model = evaluation.model
        truncate = None if model.truncation == "full" else model.bptt_truncate
        figure = diagnostics.plot_gradient_decay(self.decay_by_epoch, truncate)
        evaluation.run.log_figure(figure, DECAY_FIGURE)
        plt.close(figure)


def sgd_update_ratios(params: dict[str, np.ndarray], grads: dict, lr: float) -> dict[str, float]:
    """||Δp|| / ||p|| for the step `p -= lr · g` that plain SGD would take with these gradients."""
    norms = diagnostics.gradient_norms(grads)
    return {
        f"update_ratio_{name}": lr * norms[f"grad_norm_{name}"] / max(float(np.linalg.norm(p)), 1e-30)
        for name, p in params.items()
    }


class DependencyLoss:
    """Loss on the targets a long-range dependency fixes, against the oracle's, on the held-out split.

    Logs `dependent_val_loss`, `oracle_dependent_val_loss` and their difference
    `dependent_excess_loss` (nats per dependent target; 0: the dependency is fully learnt). Each
    sentence is read only up to its last dependent target, so this costs less than the trainer's
    own validation pass. Silent for datasets without dependent targets.
    """

    def __call__(self, evaluation: Evaluation) -> None:
        split = evaluation.corpus.splits[held_out_split(evaluation)]
        if split.dependent is None or split.oracle_token_nll is None:
            return
        model_nll, oracle_nll = dependent_target_nll(evaluation.model, split)
        if not model_nll.size:
            return
        evaluation.run.log_metrics({
            "dependent_val_loss": float(model_nll.mean()),
            "oracle_dependent_val_loss": float(oracle_nll.mean()),
            "dependent_excess_loss": float(model_nll.mean() - oracle_nll.mean()),
        }, evaluation.step)


def dependent_target_nll(model: RNNLM, split: Split, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The model's and the oracle's NLL of every dependent target, each sentence from a zero state."""
    prefixes = []
    for sentence, dependent, oracle in zip(split.sentences, split.dependent, split.oracle_token_nll):
        if dependent.any():
            end = int(np.flatnonzero(dependent)[-1]) + 1  # targets up to the last dependent one
            prefixes.append((sentence[: end + 1], dependent[:end], oracle[:end]))
    prefixes.sort(key=lambda prefix: len(prefix[0]))
    model_parts, oracle_parts = [], []
    for start in range(0, len(prefixes), batch_size):
        chunk = prefixes[start : start + batch_size]
        x, y, mask = batches.pad([sentence for sentence, _, _ in chunk])
        dependent = np.zeros_like(mask)
        for row, (_, marks, oracle) in enumerate(chunk):
            dependent[row, : len(marks)] = marks
            oracle_parts.append(oracle[marks])
        nll, _ = model.token_nll(x, y, mask)
        model_parts.append(nll[dependent])
    if not prefixes:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(model_parts), np.concatenate(oracle_parts)
