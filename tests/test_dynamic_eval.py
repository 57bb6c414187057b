"""protocol=dynamic (Krause et al. 2018): the tests that would catch a cheat, and the command line's promises."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from rnnexp.config.schema import CacheSettings, DynamicConfig, ModelConfig
from rnnexp.data import load_corpus
from rnnexp.engine import build_model, load_params
from rnnexp.tracking import trained
from rnnexp.training import evaluation
from rnnexp.training.cache import cached
from rnnexp.training.dynamic import DynamicEvaluation, dynamic_reading
from tests.runner_setup import TINY, evaluate_error, run_cli, run_on_trained, store

V = 20


def tiny_model(
    dtype: str = "float32",
    cell: str = "lstm",
    dropout: float = 0.0,
    hidden: int = 8,
    tied: bool = False,
    output="softmax",
):
    cfg = ModelConfig(
        cell=cell,
        hidden_dim=hidden,
        layers=1 if cell == "rnn" else 2,  # the tutorial's RNN has one layer (build_model checks the config)
        truncation="chunk",
        bptt_truncate=10,
        dtype=dtype,
        dropout=dropout,
        tie_weights=tied,
        output=output,
        classes=4,
    )
    return build_model(cfg, V, seed=5, counts=np.arange(V, 0, -1)), cfg


def stream_of(length: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, length)


def digest(params: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for name in sorted(params):
        sha.update(name.encode() + np.ascontiguousarray(params[name]).tobytes())
    return sha.hexdigest()


@pytest.mark.parametrize(
    ("cell", "tied", "output"),
    [("lstm", False, "softmax"), ("lstm", True, "softmax"), ("lstm", False, "class"), ("gru", False, "softmax")]
    + [("rnn", False, "softmax")],
)
def test_rate_zero_gives_the_stateful_score_exactly(cell: str, tied: bool, output: str) -> None:
    # dropout must stay off in the copy that adapts
    model, cfg = tiny_model(cell=cell, dropout=0.0 if cell == "rnn" else 0.5, tied=tied, output=output)
    stream = stream_of(333)
    reading = dynamic_reading(model, cfg, stream, DynamicConfig(lr=0.0, segment_length=20))
    stateful = evaluation.stateful_nll(model, stream, 20)
    assert np.array_equal(reading.nll, stateful)
    assert reading.nll.mean(dtype=np.float64) == stateful.mean(dtype=np.float64)
    adapted = dynamic_reading(model, cfg, stream, DynamicConfig(lr=2.0, segment_length=20))
    assert not np.array_equal(adapted.nll, stateful)  # a real rate does move the scores


def test_a_tokens_score_never_depends_on_a_step_that_saw_it() -> None:
    model, cfg = tiny_model()
    stream = stream_of(400)
    settings = DynamicConfig(lr=3.0, segment_length=20)
    changed_from = 117  # mid-segment: its segment's step sees it, and that step comes after the segment's scores
    other = stream.copy()
    other[changed_from:] = (stream[changed_from:] + 1) % V
    scores = dynamic_reading(model, cfg, stream, settings).nll
    other_scores = dynamic_reading(model, cfg, other, settings).nll
    # stream[j] is the target of position j - 1 and the input of position j: everything before stays exactly
    assert np.array_equal(scores[: changed_from - 1], other_scores[: changed_from - 1])
    assert not np.array_equal(scores[changed_from - 1 :], other_scores[changed_from - 1 :])
    # and so for both together: the cache on the adapted model's states
    both = CacheSettings(size=50, theta=0.5, lam=0.3)
    mixed = cached(dynamic_reading(model, cfg, stream, settings, keep_states=True), both)
    other_mixed = cached(dynamic_reading(model, cfg, other, settings, keep_states=True), both)
    assert np.array_equal(mixed[: changed_from - 1], other_mixed[: changed_from - 1])
    assert not np.array_equal(mixed[changed_from - 1 :], other_mixed[changed_from - 1 :])


def test_each_segment_is_scored_with_the_weights_from_before_its_own_step() -> None:
    model, cfg = tiny_model("float64")
    stream = stream_of(61)
    lr, L = 2.0, 20
    scores = dynamic_reading(model, cfg, stream, DynamicConfig(lr=lr, segment_length=L)).nll
    x, y = stream[:-1], stream[1:]
    # rebuilt by hand: the trained weights score segment 0; one SGD step on it; those weights score segment 1
    weights = build_model(cfg, V, seed=0)
    load_params(weights, model.params)
    first, state = weights.token_nll(x[None, :L], y[None, :L])
    step = weights.backprop(x[None, :L], y[None, :L])
    for name, value in weights.params.items():
        value -= lr * step.grads[name]
    second, _ = weights.token_nll(x[None, L : 2 * L], y[None, L : 2 * L], h0=state)
    assert np.array_equal(scores[:L], first[0])
    np.testing.assert_allclose(scores[L : 2 * L], second[0], rtol=1e-12)
    assert not np.allclose(scores[L : 2 * L], model.token_nll(x[None, L : 2 * L], y[None, L : 2 * L], h0=state)[0][0])


def central_differences(model, x: np.ndarray, y: np.ndarray, state: np.ndarray, eps: float = 1e-6) -> dict:
    """d(mean NLL of the segment from `state`)/dθ, entry by entry."""
    grads = {}
    for name, value in model.params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            kept = value[index]
            value[index] = kept + eps
            up = model.token_nll(x[None], y[None], h0=state)[0].mean()
            value[index] = kept - eps
            down = model.token_nll(x[None], y[None], h0=state)[0].mean()
            value[index] = kept
            grad[index] = (up - down) / (2 * eps)
        grads[name] = grad
    return grads


def test_the_update_is_the_central_difference_gradient_step_with_decay_toward_the_trained_weights() -> None:
    model, cfg = tiny_model("float64", hidden=4)
    trained_weights = {name: value.copy() for name, value in model.params.items()}
    stream = stream_of(25)
    lr, decay = 0.7, 0.1
    evaluation_ = DynamicEvaluation(model, cfg, lr, decay)
    _, _, state = evaluation_.read(stream[:12], stream[1:13], None)  # a first step: the weights leave θ₀
    adapted = {name: value.copy() for name, value in evaluation_.model.params.items()}
    x, y = stream[12:-1], stream[13:]
    numeric = central_differences(evaluation_.model, x, y, state)
    evaluation_.read(x, y, state)
    for name, value in evaluation_.model.params.items():
        expected = adapted[name] - lr * numeric[name] + decay * (trained_weights[name] - adapted[name])
        np.testing.assert_allclose(value, expected, rtol=1e-7, atol=1e-9, err_msg=name)
    assert digest(model.params) == digest(trained_weights)  # the steps went to a copy


# ------------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def chunk_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny stream-trained LSTM run (model.truncation=chunk) in its own store."""
    tmp_path = tmp_path_factory.mktemp("dynamic_run")
    done = run_cli(tmp_path, *TINY, *store(tmp_path), "model=lstm", "model.truncation=chunk", "model.bptt_truncate=10")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rnnexp").experiment_id])
    return tmp_path, run.info.run_id


def test_the_command_logs_both_splits_and_leaves_the_checkpoint_as_it_was(chunk_run: tuple[Path, str]) -> None:
    tmp_path, run_id = chunk_run
    checkpoint = tmp_path / "checkpoints" / run_id / "best.npz"
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    done = run_on_trained(tmp_path, "rnnexp.evaluate", run_id, "protocol=dynamic", "dynamic.lr=2")
    assert len(done.stdout.splitlines()) == 2
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    assert run.data.tags["dynamic_test_ppl.settings"] == (
        "dynamic.lr=2 dynamic.segment_length=20 dynamic.decay=0 checkpoint=best"
    )
    # the logged number is the protocol's, re-scored here from the untouched checkpoint (float32 work)
    loaded = trained.load(client, run_id, "best", tmp_path / "checkpoints")
    test = load_corpus(loaded.config.dataset, seed=loaded.config.seed).splits["test"].stream()
    reading = dynamic_reading(loaded.model, loaded.config.model, test, DynamicConfig(lr=2.0, segment_length=20))
    assert run.data.metrics["dynamic_test_ppl"] == pytest.approx(np.exp(reading.nll.mean(dtype=np.float64)), rel=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["protocol=dynamic", "dynamic.lr=-1"], "dynamic.lr must be a finite number >= 0, got -1.0"),
        (["protocol=dynamic", "dynamic.segment_length=0"], "dynamic.segment_length must be >= 1, got 0"),
        (["protocol=dynamic", "dynamic.decay=1"], r"dynamic.decay must lie in \[0, 1\), got 1.0"),
        (["protocol=dynamic", "dynamic.momentum=0.9"], "Key 'momentum' not in 'DynamicConfig'"),
    ],
)
def test_bad_dynamic_input_is_one_line_and_exit_2(chunk_run: tuple[Path, str], args: list[str], message: str) -> None:
    tmp_path, run_id = chunk_run
    assert re.search(message, evaluate_error(tmp_path, run_id, *args))
