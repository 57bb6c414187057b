"""protocol=cache (Grave et al. 2017): the tests that would catch a cheat, and the command line's promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from rnnexp.config.resolve import cache_settings
from rnnexp.config.schema import CacheSettings, ModelConfig
from rnnexp.engine import build_model
from rnnexp.errors import UserError
from rnnexp.training import evaluation
from rnnexp.training.cache import BLOCK, cache_nll, cache_probabilities, cache_probability_grid, cached, read_stream
from tests.runner_setup import TINY, evaluate_error, run_cli, run_on_trained, store

V = 20


def tiny_model(dtype: str = "float32", output: str = "softmax", cell: str = "lstm"):
    cfg = ModelConfig(
        cell=cell, hidden_dim=8, layers=2, truncation="chunk", bptt_truncate=10, dtype=dtype, output=output, classes=4
    )
    return build_model(cfg, V, seed=3, counts=np.arange(V, 0, -1)), cfg


def stream_of(length: int, seed: int = 0) -> np.ndarray:
    """Words with repeats, as text has, so that the cache has something to find."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(length) < 0.5, rng.integers(0, 5, length), rng.integers(0, V, length))


def literal_cache_probability(states: np.ndarray, targets: np.ndarray, size: int, theta: float) -> np.ndarray:
    """p_cache(y_t | t) position by position, straight from the paper's formula."""
    probabilities = np.zeros(len(states))
    for t in range(1, len(states)):
        window = range(max(0, t - size), t)
        weights = np.array([np.exp(theta * float(states[t] @ states[i])) for i in window])
        probabilities[t] = sum(w for w, i in zip(weights, window) if targets[i] == targets[t]) / weights.sum()
    return probabilities


@pytest.mark.parametrize("size", [7, BLOCK + 40])  # a window shorter than a block, and one reaching the block before
def test_cache_probabilities_equal_the_formula_position_by_position(size: int) -> None:
    model, _ = tiny_model("float64")
    reading = read_stream(model, stream_of(2 * BLOCK + 50), 64)
    fast = cache_probabilities(reading.states, reading.targets, size, 0.7)
    literal = literal_cache_probability(reading.states, reading.targets, size, 0.7)
    np.testing.assert_allclose(fast, literal, rtol=1e-12, atol=1e-300)
    assert fast[0] == 0.0 and (fast[1:] > 0).mean() > 0.2  # the cache finds repeated words


def test_the_sweeps_grid_gives_each_settings_own_probabilities() -> None:
    model, _ = tiny_model("float64")
    reading = read_stream(model, stream_of(2 * BLOCK + 50), 64)
    sizes, thetas = [7, 100, BLOCK + 40], [0.3, 1.5]
    grid = cache_probability_grid(reading.states, reading.targets, sizes, thetas)
    for size in sizes:
        for theta in thetas:
            single = cache_probabilities(reading.states, reading.targets, size, theta)
            np.testing.assert_allclose(grid[size, theta], single, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("size", [7, BLOCK + 40])
def test_the_mixed_distribution_sums_to_one_at_every_position(size: int) -> None:
    model, _ = tiny_model("float64")
    stream = stream_of(BLOCK + 100)
    x = stream[:-1]
    reading = read_stream(model, stream, len(x))  # one segment, as the full distribution below is read
    settings = CacheSettings(size=size, theta=0.5, lam=0.3)
    # p_model(w | t) for every word w: the same inputs, every target set to w in turn
    p_model = np.stack([np.exp(-model.token_nll(x[None], np.full((1, len(x)), w))[0][0]) for w in range(V)], axis=1)
    every_word = np.tile(np.arange(V), (len(x), 1))
    p_cache = cache_probabilities(reading.states, reading.targets, settings.size, settings.theta, every_word)
    mixed = (1 - settings.lam) * p_model + settings.lam * p_cache
    mixed[0] = p_model[0]  # the first position's cache is empty: the model alone

    np.testing.assert_allclose(p_model.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p_cache[1:].sum(axis=1), 1.0, rtol=1e-12)
    assert not p_cache[0].any()
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-12)
    # and the protocol's score is that distribution at the word that came
    np.testing.assert_allclose(
        cached(reading, settings), -np.log(mixed[np.arange(len(x)), reading.targets]), rtol=1e-12
    )


def test_position_t_never_uses_a_position_at_or_after_t() -> None:
    model, _ = tiny_model()
    stream = stream_of(2 * BLOCK + 50)
    settings = CacheSettings(size=BLOCK + 40, theta=0.5, lam=0.4)
    changed_from = BLOCK + 30  # inside the second block, whose scores share a matrix with later positions
    other = stream.copy()
    other[changed_from:] = (stream[changed_from:] + 1) % V
    scores, other_scores = cache_nll(model, stream, settings, 64), cache_nll(model, other, settings, 64)
    # stream[j] is the target of position j - 1 and the input of position j: everything before stays exactly
    assert np.array_equal(scores[: changed_from - 1], other_scores[: changed_from - 1])
    assert not np.array_equal(scores[changed_from - 1 :], other_scores[changed_from - 1 :])

    # and the cache's whole distribution at t, from the states up to h_t (its query) and the words before y_t:
    # the word that came at t and everything later may change without moving it
    reading = read_stream(model, stream, 64)
    states, targets = reading.states.copy(), reading.targets.copy()
    states[changed_from + 1 :] *= -3.0
    targets[changed_from:] = (targets[changed_from:] + 1) % V
    every_word = np.tile(np.arange(V), (len(targets), 1))
    before = cache_probabilities(reading.states, reading.targets, settings.size, settings.theta, every_word)
    after = cache_probabilities(states, targets, settings.size, settings.theta, every_word)
    assert np.array_equal(before[: changed_from + 1], after[: changed_from + 1])
    assert not np.array_equal(before[changed_from + 1 :], after[changed_from + 1 :])


@pytest.mark.parametrize("output", ["softmax", "class"])
def test_lambda_zero_gives_the_stateful_score_exactly(output: str) -> None:
    model, _ = tiny_model(output=output)
    stream = stream_of(700)
    stateful = evaluation.stateful_nll(model, stream, 64)
    scores = cache_nll(model, stream, CacheSettings(size=50, theta=0.3, lam=0.0), 64)
    assert np.array_equal(scores, stateful)
    assert scores.mean() == stateful.mean(dtype=np.float64)
    mixed = cache_nll(model, stream, CacheSettings(size=50, theta=0.3, lam=0.2), 64)
    assert np.isfinite(mixed).all() and not np.array_equal(mixed, scores)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"lambda": 1.5}, r"cache.lambda must lie in \[0, 1\], got 1.5"),
        ({"lambda": -0.1}, r"cache.lambda must lie in \[0, 1\], got -0.1"),
        ({"size": 0}, "cache.size must be an integer >= 1"),
        ({"size": 2.5}, "cache.size must be an integer >= 1"),
        ({"theta": 0}, "cache.theta must be a finite number > 0"),
        ({"theta": float("inf")}, "cache.theta must be a finite number > 0"),
        ({"window": 3}, "unknown cache knob"),
    ],
)
def test_impossible_cache_settings_are_refused(knobs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cache_settings(knobs)


# ------------------------------------------------------------------------------------ the command line
def only_run(tmp_path: Path) -> str:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rnnexp").experiment_id])
    return run.info.run_id


@pytest.fixture(scope="module")
def chunk_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny stream-trained LSTM run (model.truncation=chunk) in its own store."""
    tmp_path = tmp_path_factory.mktemp("cache_run")
    done = run_cli(tmp_path, *TINY, *store(tmp_path), "model=lstm", "model.truncation=chunk", "model.bptt_truncate=10")
    assert done.returncode == 0, done.stderr
    return tmp_path, only_run(tmp_path)


def test_the_command_logs_valid_and_test_perplexities_with_their_settings(chunk_run: tuple[Path, str]) -> None:
    tmp_path, run_id = chunk_run
    done = run_on_trained(tmp_path, "rnnexp.evaluate", run_id, "protocol=cache", "cache.lambda=0")
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "synthetic/valid" in lines[0] and "synthetic/test" in lines[1]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    # λ = 0 is the stateful protocol, which the trainer logged; re-scored in another process, to float32 precision
    assert run.data.metrics["cache_test_ppl"] == pytest.approx(run.data.metrics["test_ppl"], rel=1e-6)
    assert run.data.metrics["cache_val_ppl"] == pytest.approx(run.data.metrics["best_val_ppl"], rel=1e-6)
    settings = "cache.size=500 cache.theta=0.3 cache.lambda=0 checkpoint=best"
    assert run.data.tags["cache_test_ppl.settings"] == settings
    assert "cache.size" not in run.data.params  # the run's params are left as they were

    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnexp.evaluate",
            "-m",
            f"run_id={run_id}",
            f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"checkpoint_dir={tmp_path}/checkpoints",
            f"hydra.sweep.dir={tmp_path}/sweep",
            "protocol=cache",
            "split=valid",
            "cache.lambda=0.05,0.1,0.2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sweep.returncode == 0, sweep.stderr
    history = client.get_metric_history(run_id, "cache_val_ppl")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # each job one more step
    assert (
        client.get_run(run_id)
        .data.tags["cache_val_ppl.settings"]
        .startswith("cache.size=500 cache.theta=0.3 cache.lambda=0.2")
    )
    swept = [line.split("perplexity ")[1].split(" ")[0] for line in sweep.stdout.splitlines()]
    assert len(swept) == 3 and len(set(swept)) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["protocol=cache", "cache.lambda=1.5"], r"cache.lambda must lie in \[0, 1\], got 1.5"),
        (["protocol=cache", "cache.size=0"], "cache.size must be an integer >= 1"),
        (["protocol=cache", "cache.window=3"], "Key 'window' is not in struct"),
        (["protocol=cache", "+cache.window=3"], "unknown cache knob"),
        (["protocol=caching"], "protocol must be one of auto, stateful, sentence, cache, dynamic"),
    ],
)
def test_bad_cache_input_is_one_line_and_exit_2(chunk_run: tuple[Path, str], args: list[str], message: str) -> None:
    tmp_path, run_id = chunk_run
    assert re.search(message, evaluate_error(tmp_path, run_id, *args))


def test_a_run_trained_on_sentences_from_a_zero_state_is_refused(tmp_path: Path) -> None:
    done = run_cli(tmp_path, *TINY, *store(tmp_path))  # the tutorial's RNN, model.truncation=window
    assert done.returncode == 0, done.stderr
    line = evaluate_error(tmp_path, only_run(tmp_path), "protocol=cache")
    assert "trains on sentences from a zero state (model.truncation=window)" in line


def test_the_ptb_script_chooses_on_validation_and_applies_once_to_test(chunk_run: tuple[Path, str]) -> None:
    tmp_path, run_id = chunk_run
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.ptb.cache_dynamic",
            f"run_id={run_id}",
            f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"checkpoint_dir={tmp_path}/checkpoints",
            f"report_dir={tmp_path}/report",
            "cache.size=[10,50]",
            "cache.theta=[0.3,1.0]",
            "cache.lambda=[0.1,0.3]",
            "dynamic.lr=[0.3,1.0]",
            "dynamic.decay=[0.01]",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "report" / "cache_dynamic.json").read_text())
    rows = {row["protocol"]: row for row in results["rows"]}
    assert list(rows) == ["model", "cache", "dynamic", "cache_dynamic"]
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert rows["model"]["test_ppl"] == pytest.approx(run.data.metrics["test_ppl"], rel=1e-6)
    sweeps = results["valid_sweeps"]
    best_cache = min(sweeps["cache"], key=lambda point: point["valid_ppl"])
    assert rows["cache"]["valid_ppl"] == best_cache["valid_ppl"]  # the lowest on validation, whatever test says
    assert rows["cache"]["settings"] == (
        f"cache.size={best_cache['size']} cache.theta={best_cache['theta']:g} cache.lambda={best_cache['lambda']:g}"
    )
    assert rows["dynamic"]["valid_ppl"] == min(point["valid_ppl"] for point in sweeps["dynamic"])
    assert len(sweeps["dynamic"]) == 3  # two rates, then the one decay at the better rate
    assert run.data.metrics["cache_dynamic_test_ppl"] == pytest.approx(rows["cache_dynamic"]["test_ppl"])
    text = (tmp_path / "report" / "CACHE_DYNAMIC.md").read_text()
    assert "| + dynamic evaluation + cache |" in text
    readings = ("model", "cache", "cache_dynamic")  # disjoint test readings ("dynamic" is inside the last one)
    assert sum(rows[key]["test_seconds"] for key in readings) < results["seconds"]
    assert f"took {results['seconds'] / 60:.1f} min here." in text
