"""Per-evaluation hooks that log the vanishing gradient and the long-range dependency.

`GradientDiagnostics` measures, on one fixed held-out batch, how far back the error reaches
(`diagnostics/grad_decay_k<kk>`), the recurrent matrix's spectrum, tanh saturation, per-parameter
gradient norms and the update-to-weight ratios of an SGD step, and draws `gradient_decay.png`
(decay against k, one line per evaluation). The metrics cost milliseconds; drawing costs about
half a second, so the figure is redrawn at most once per `figure_interval_s` and always after the
last evaluation. `DependencyLoss` scores the held-out split's dependent targets (the synthetic
language's echo words) against the oracle. Neither touches the parameters or any random generator
of the trainer, so a run logs the same training curve with or without them.

Every diagnostic metric is named under `diagnostics/`, which the MLflow UI shows as one chart
section, with k zero-padded so that the curves sort in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexp.config.schema import DiagnosticsConfig
from rnnexp.data import Split
from rnnexp.engine.grads import squared_norm
from rnnexp.training import batches
from rnnexp.training.recorder import Recorder

DECAY_FIGURE = "gradient_decay.png"
PREFIX = "diagnostics/"
SATURATION = 0.99
LEGEND_EPOCHS = 10


@dataclass
class Evaluation:
    """What a per-evaluation hook gets: the model after `step` updates and where to log."""

    model: Any  # any engine model (see rnnexp.engine)
    held_out: Split  # the validation split, or the training split for data without one
    epoch: int  # epochs completed (0: before training)
    step: int
    lr: float  # the rate the next update will use
    final: bool  # the run's last evaluation
    recorder: Recorder


EvalHook = Callable[[Evaluation], None]


def decay_metric(k: int) -> str:
    return f"{PREFIX}grad_decay_k{k:02d}"


def evaluation_hooks(cfg: DiagnosticsConfig) -> list[EvalHook]:
    """The hooks a run calls at every evaluation.

    The dependent-target losses are logged whatever `enabled` says: they cost less than the
    trainer's own validation pass, and without them a synthetic run's memory cannot be judged.
    """
    gradients: list[EvalHook] = [GradientDiagnostics(cfg)] if cfg.enabled else []
    return [*gradients, DependencyLoss()]


class GradientDiagnostics:
    """Gradient flow, spectrum and saturation on the same held-out batch at every evaluation.

    The decay follows the full chain whatever the training truncation. The gradient norms and
    update ratios use the model's own truncation (chunk mode: each sentence one chunk) and the
    gradient of the batch's mean loss, so with `train.reduction=sum` the real steps are larger by
    about the tokens per batch. After a resume the figure shows the evaluations since the resume;
    the metrics hold them all.
    """

    def __init__(self, cfg: DiagnosticsConfig):
        self.cfg = cfg
        self.batch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.decay_by_epoch: dict[int, np.ndarray] = {}
        self.last_drawn = time.monotonic()
        self.seconds = 0.0  # time spent in this hook, to report its cost

    def __call__(self, evaluation: Evaluation) -> None:
        started = time.perf_counter()
        model = evaluation.model
        if self.batch is None:
            self.batch = held_out_batch(evaluation.held_out, self.cfg.batch_size)
        x, y, mask = self.batch
        decay = model.gradient_decay(x, y, mask, self.cfg.max_depth)
        metrics = {decay_metric(k): float(value) for k, value in enumerate(decay) if np.isfinite(value)}
        if "W" in model.params:
            metrics.update(weight_spectrum(model.params["W"]))
        step = model.backprop(x, y, mask)
        metrics["tanh_saturation"] = saturation(model.hidden_states(x), mask)
        metrics.update(gradient_norms(step.grads))
        metrics.update(sgd_update_ratios(model.params, step.grads, evaluation.lr))
        evaluation.recorder.log_metrics(
            {PREFIX + key if not key.startswith(PREFIX) else key: value for key, value in metrics.items()},
            evaluation.step,
        )
        self.decay_by_epoch[evaluation.epoch] = decay
        now, interval = time.monotonic(), self.cfg.figure_interval_s
        if interval is not None and (evaluation.final or now - self.last_drawn >= interval):
            truncate = None if model.truncation == "full" else model.bptt_truncate
            evaluation.recorder.log_figure(plot_gradient_decay(self.decay_by_epoch, truncate), DECAY_FIGURE)
            self.last_drawn = now
        self.seconds += time.perf_counter() - started


def held_out_batch(split: Split, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's longest sentences (the first of equal length), so that deep k have outputs to average."""
    sentences = batches.usable(split.sentences)
    longest_first = np.argsort([-len(s) for s in sentences], kind="stable")[:size]
    return batches.pad([sentences[i] for i in sorted(longest_first)])


def sgd_update_ratios(params: dict[str, np.ndarray], grads: dict, lr: float) -> dict[str, float]:
    """||Δp|| / ||p|| for the step `p -= lr · g` that plain SGD would take with these gradients."""
    norms = gradient_norms(grads)
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
        split = evaluation.held_out
        if split.dependent is None or split.oracle_token_nll is None:
            return
        model_nll, oracle_nll = dependent_target_nll(evaluation.model, split)
        if not model_nll.size:
            return
        evaluation.recorder.log_metrics(
            {
                "dependent_val_loss": float(model_nll.mean()),
                "oracle_dependent_val_loss": float(oracle_nll.mean()),
                "dependent_excess_loss": float(model_nll.mean() - oracle_nll.mean()),
            },
            evaluation.step,
        )


def dependent_target_nll(model: Any, split: Split, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The model's and the oracle's NLL of every dependent target, each sentence from a zero state."""
    prefixes = []
    assert split.dependent is not None and split.oracle_token_nll is not None, "a split without dependent targets"
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


def weight_spectrum(W: np.ndarray) -> dict[str, float]:
    """Spectral radius and largest singular value of the recurrent matrix: above 1, gradients can grow."""
    return {
        "w_spectral_radius": float(np.abs(np.linalg.eigvals(W)).max()),
        "w_max_singular_value": float(np.linalg.norm(W, 2)),
    }


def saturation(states: np.ndarray, mask=None) -> float:
    """Fraction of tanh units with |s| > 0.99, where the derivative (1 - s²) all but stops the gradient."""
    saturated = np.abs(states) > SATURATION
    if mask is None:
        return float(saturated.mean())
    real = np.asarray(mask, bool)
    return float(saturated[real].mean())


def gradient_norms(grads: dict) -> dict[str, float]:
    """The L2 norm of each parameter's gradient."""
    return {f"grad_norm_{name}": float(np.sqrt(squared_norm(g))) for name, g in grads.items()}


def plot_gradient_decay(history: dict[int, np.ndarray], truncate: int | None = None) -> Any:
    """A matplotlib Figure: gradient norm against steps back (log scale), one line per evaluation.

    Up to LEGEND_EPOCHS lines are named in a legend beside the axes; more are told apart by a
    colour bar of epochs.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    epochs = sorted(history)
    norm, cmap = Normalize(epochs[0], max(epochs[-1], epochs[0] + 1)), colormaps["viridis"]
    for epoch in epochs:
        decay = np.asarray(history[epoch])
        label = "untrained" if epoch == 0 else f"after epoch {epoch}"
        ax.semilogy(np.arange(len(decay)), decay, marker=".", color=cmap(norm(epoch)), label=label)
    if truncate is not None:
        ax.axvline(truncate, color="grey", linestyle="--", label=f"training truncation ({truncate} steps)")
    ax.set_xlabel("k: steps back from the output")
    ax.set_ylabel(r"mean gradient norm $\Vert\partial L_t / \partial s_{t-k}\Vert$")
    ax.set_title("How far back the error reaches (a fixed held-out batch)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) <= LEGEND_EPOCHS:
        fig.legend(loc="outside right upper", fontsize="small")
    else:
        fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="epoch")
        if truncate is not None:
            ax.legend(handles=ax.lines[-1:], fontsize="small", loc="upper right")
    return fig
