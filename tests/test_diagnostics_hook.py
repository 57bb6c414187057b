"""The per-evaluation diagnostics hooks, checked against direct computations on tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from rnnexp.config import DatasetConfig, DiagnosticsConfig, SyntheticConfig
from rnnexp.config.resolve import validate_diagnostics
from rnnexp.config.schema import ModelConfig
from rnnexp.data import load_corpus
from rnnexp.engine import build_model
from rnnexp.engine.optim import make_optimizer
from rnnexp.engine.rnn import RNNLM
from rnnexp.errors import UserError
from rnnexp.tracking import train
from rnnexp.training.diagnostics import (
    DECAY_FIGURE,
    PREFIX,
    DependencyLoss,
    Evaluation,
    GradientDiagnostics,
    decay_metric,
    evaluation_hooks,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
VOCAB, DISTANCE, LR = 30, 3, 0.7


class RecordingRun:
    """Stands in for the MLflow run: keeps what the hooks log."""

    def __init__(self) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.figures: list[str] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.setdefault(step, {}).update(metrics)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.figures.append(artifact_file)


@pytest.fixture(scope="module")
def corpus():
    """60 sentences of a 30-word language whose first word fixes the word 3 positions later."""
    synthetic = SyntheticConfig(n_sentences=60, distance=DISTANCE, max_words=10)
    return load_corpus(DatasetConfig(vocab_size=VOCAB, synthetic=synthetic))


def lively_model(truncation: str = "window") -> RNNLM:
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=2, truncation=truncation, dtype="float64"), VOCAB, 5)
    model.params["W"] *= 3.0  # gradients that still carry signal many steps back
    return model


def evaluate(hook, model: RNNLM, corpus, epoch: int = 1, step: int = 7, last_epoch: int = 5) -> RecordingRun:
    run = RecordingRun()
    hook(Evaluation(model, corpus.splits["valid"], epoch, step, LR, epoch >= last_epoch, run))
    return run


def forward(model: RNNLM, words: np.ndarray) -> list[np.ndarray]:
    P, s, states = model.params, np.zeros(model.H), []
    for w in words:
        s = np.tanh(P["U"][:, w] + P["W"] @ s)
        states.append(s)
    return states


def chain_rule_norms(model: RNNLM, sentence: np.ndarray) -> dict[int, list[float]]:
    """||∂L_t/∂s_{t-k}|| for every output t and depth k, by the chain rule one sentence at a time."""
    P, x, y = model.params, sentence[:-1], sentence[1:]
    states, norms = forward(model, x), {}
    for t in range(len(x)):
        logits = P["V"] @ states[t]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p[y[t]] -= 1.0
        grad = P["V"].T @ p  # ∂L_t/∂s_t
        for k in range(t + 1):
            norms.setdefault(k, []).append(float(np.linalg.norm(grad)))
            grad = P["W"].T @ ((1.0 - states[t - k] ** 2) * grad)
    return norms


def test_logged_gradient_decay_equals_the_chain_rule_through_each_held_out_sentence(corpus) -> None:
    model = lively_model()
    valid = [s for s in corpus.splits["valid"].sentences if len(s) >= 2]
    hook = GradientDiagnostics(DiagnosticsConfig(max_depth=30, batch_size=len(valid)))
    logged = evaluate(hook, model, corpus).metrics[7]

    pooled: dict[int, list[float]] = {}
    for sentence in valid:
        for k, norms in chain_rule_norms(model, sentence).items():
            pooled.setdefault(k, []).extend(norms)
    prefix = decay_metric(0)[:-2]
    assert sorted(int(key[len(prefix) :]) for key in logged if key.startswith(prefix)) == sorted(pooled)
    assert max(pooled) < 30  # depths no held-out output reaches are left out, not logged as NaN
    for k, norms in pooled.items():
        assert logged[decay_metric(k)] == pytest.approx(np.mean(norms), rel=1e-10)


def test_the_held_out_batch_is_the_longest_sentences_and_stays_fixed(corpus) -> None:
    hook = GradientDiagnostics(DiagnosticsConfig(batch_size=3))
    model = lively_model()
    first = evaluate(hook, model, corpus).metrics[7]
    x, _, mask = hook.batch
    lengths = sorted(len(s) - 1 for s in corpus.splits["valid"].sentences)
    assert sorted(mask.sum(axis=1)) == lengths[-3:]
    model.params["W"] *= 0.5
    second = evaluate(hook, model, corpus).metrics[7]
    assert hook.batch[0] is x
    assert second[decay_metric(3)] < first[decay_metric(3)]  # a weaker recurrence forgets faster


def test_spectrum_saturation_gradient_norms_and_a_real_sgd_steps_update_ratios(corpus) -> None:
    model = lively_model()
    hook = GradientDiagnostics(DiagnosticsConfig(batch_size=4))
    logged = evaluate(hook, model, corpus).metrics[7]
    x, y, mask = hook.batch

    W = model.params["W"]
    assert logged[PREFIX + "w_spectral_radius"] == pytest.approx(max(abs(np.linalg.eigvals(W))), rel=1e-12)
    assert logged[PREFIX + "w_max_singular_value"] == pytest.approx(np.linalg.svd(W, compute_uv=False)[0], rel=1e-12)
    states = np.concatenate([forward(model, row[:n]) for row, n in zip(x, mask.sum(axis=1))])
    assert logged[PREFIX + "tanh_saturation"] == pytest.approx(np.mean(np.abs(states) > 0.99), abs=1e-12)
    assert 0.0 < logged[PREFIX + "tanh_saturation"] < 1.0

    grads = model.backprop(x, y, mask).grads
    stepped = {name: value.copy() for name, value in model.params.items()}
    make_optimizer("sgd").step(stepped, grads, LR)
    for name, before in model.params.items():
        assert logged[f"{PREFIX}grad_norm_{name}"] == pytest.approx(np.linalg.norm(grads[name]), rel=1e-12)
        ratio = np.linalg.norm(stepped[name] - before) / np.linalg.norm(before)
        assert logged[f"{PREFIX}update_ratio_{name}"] == pytest.approx(ratio, rel=1e-9)


def test_the_figure_is_redrawn_at_the_interval_always_after_the_last_evaluation_or_never(corpus) -> None:
    model = lively_model()
    every_time = GradientDiagnostics(DiagnosticsConfig(figure_interval_s=0))
    assert [evaluate(every_time, model, corpus, epoch, last_epoch=2).figures for epoch in (0, 1, 2)] == [
        [DECAY_FIGURE]
    ] * 3
    rarely = GradientDiagnostics(DiagnosticsConfig(figure_interval_s=3600))
    assert [evaluate(rarely, model, corpus, epoch, last_epoch=2).figures for epoch in (0, 1, 2)] == [
        [],
        [],
        [DECAY_FIGURE],
    ]
    assert sorted(rarely.decay_by_epoch) == [0, 1, 2]  # the last figure draws every evaluation
    never = GradientDiagnostics(DiagnosticsConfig(figure_interval_s=None))
    assert [evaluate(never, model, corpus, epoch, last_epoch=2).figures for epoch in (0, 1, 2)] == [[], [], []]


def test_dependency_loss_compares_the_dependent_targets_with_the_oracle(corpus) -> None:
    model = lively_model()
    logged = evaluate(DependencyLoss(), model, corpus).metrics[7]

    valid = corpus.splits["valid"]
    echoes = []
    for sentence in valid.sentences:
        nll, _ = model.token_nll(sentence[:-1], sentence[1:])  # the whole sentence, plainly
        echoes.append(nll[0, DISTANCE])
    assert all(len(s) - 1 > DISTANCE for s in valid.sentences)  # every sentence holds its echo
    assert logged["oracle_dependent_val_loss"] == 0.0  # the echo is certain once the key is known
    assert logged["dependent_val_loss"] == pytest.approx(np.mean(echoes), rel=1e-10)
    assert logged["dependent_excess_loss"] == logged["dependent_val_loss"]
    assert logged["dependent_val_loss"] > np.log(4)  # untrained: worse than knowing all but the key


def test_dependency_loss_is_silent_without_a_dependency() -> None:
    corpus = load_corpus(DatasetConfig(vocab_size=VOCAB, synthetic=SyntheticConfig(n_sentences=60)))
    assert evaluate(DependencyLoss(), lively_model(), corpus).metrics == {}


def test_the_config_switches_the_gradient_diagnostics_and_rejects_impossible_values() -> None:
    on = evaluation_hooks(DiagnosticsConfig())
    off = evaluation_hooks(DiagnosticsConfig(enabled=False))
    assert [type(hook) for hook in on] == [GradientDiagnostics, DependencyLoss]
    assert [type(hook) for hook in off] == [DependencyLoss]
    for bad in (
        DiagnosticsConfig(max_depth=-1),
        DiagnosticsConfig(batch_size=0),
        DiagnosticsConfig(figure_interval_s=-1),
    ):
        with pytest.raises(UserError, match="diagnostics"):
            validate_diagnostics(bad)


@pytest.mark.slow
def test_every_run_logs_the_diagnostics_and_trains_exactly_as_with_them_switched_off(tmp_path: Path) -> None:
    overrides = [
        "model.hidden_dim=8",
        "dataset.vocab_size=40",
        "optim.lr=2",
        "train.epochs=2",
        "train.batch_size=16",
        "blas_threads=1",
        "dataset.synthetic.n_sentences=400",
        "dataset.synthetic.distance=4",
        "train.samples=0",
        f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"train.checkpoint_dir={tmp_path}/checkpoints",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = compose("config", overrides=[*overrides, "experiment_name=plain", "diagnostics.enabled=false"])
        diagnosed = compose("config", overrides=[*overrides, "experiment_name=diagnosed", "diagnostics.max_depth=12"])
    train(plain)
    train(diagnosed)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = {
        name: client.search_runs([client.get_experiment_by_name(name).experiment_id])[0]
        for name in ("plain", "diagnosed")
    }
    curves = {
        name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")]
        for name, run in runs.items()
    }
    assert curves["diagnosed"] == curves["plain"]  # bitwise: the hooks change nothing in training
    run_id = runs["diagnosed"].info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, decay_metric(0))]
    assert steps == [step for step, _ in curves["plain"]] and len(steps) == 3
    metrics = runs["diagnosed"].data.metrics
    assert {decay_metric(k) for k in range(13)} <= set(metrics) and decay_metric(13) not in metrics
    assert metrics[decay_metric(12)] < metrics[decay_metric(0)]
    assert metrics["dependent_excess_loss"] > 0 and metrics["oracle_dependent_val_loss"] == 0.0
    assert DECAY_FIGURE in [artifact.path for artifact in client.list_artifacts(run_id)]
    switched_off = runs["plain"].data.metrics
    assert not any(key.startswith(PREFIX) for key in switched_off)
    assert switched_off["dependent_excess_loss"] == metrics["dependent_excess_loss"]  # logged either way
