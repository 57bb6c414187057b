"""Central differences against the engine, for every parameter and truncation mode."""

import subprocess
import sys

import numpy as np
import pytest

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.gradcheck import relative_errors


@pytest.mark.parametrize("truncation", ["window", "chunk", "full"])
@pytest.mark.parametrize("truncate", [1, 3])
def test_every_mode_passes_central_differences(truncation, truncate):
    model = build_model(
        ModelConfig(hidden_dim=4, bptt_truncate=truncate, truncation=truncation, dtype="float64"), 9, truncate
    )
    x, y = np.random.default_rng(truncate).integers(0, 9, (2, 8))
    errors = relative_errors(model, x, y)
    assert set(errors) == {"U", "W", "V"}
    assert max(errors.values()) < 1e-6


def test_the_check_fails_on_a_wrong_gradient():
    """Window and full gradients differ: the window objective must reject the full gradient."""
    x, y = np.random.default_rng(0).integers(0, 9, (2, 8))
    model = build_model(ModelConfig(hidden_dim=4, bptt_truncate=1, truncation="window", dtype="float64"), 9, 0)
    full = build_model(ModelConfig(hidden_dim=4, bptt_truncate=4, truncation="full", dtype="float64"), 9, 0)
    model.loss_and_grads = full.loss_and_grads
    assert relative_errors(model, x, y)["W"] > 1e-3


def test_the_command_prints_each_parameter_and_exits_by_the_verdict():
    ok = subprocess.run(
        [sys.executable, "-m", "rnnexp.check_gradients", "model.truncation=chunk"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert [line.split()[0] for line in ok.stdout.splitlines()[1:]] == ["dU:", "dW:", "dV:"]
    bad = subprocess.run(
        [sys.executable, "-m", "rnnexp.check_gradients", "tolerance=1e-30"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "FAILED" in bad.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "rnnexp.check_gradients", "model.hidden_dim=0"], capture_output=True, text=True
    )
    assert wrong.returncode == 2 and wrong.stderr.strip() == "error: model.hidden_dim must be >= 1, got 0."


@pytest.mark.parametrize("truncation", ["window", "chunk", "full"])
def test_the_class_output_is_checked_from_the_command_line(truncation):
    """`model.output=class` takes its classes from Zipf-like counts, since a gradient check has no corpus."""
    done = subprocess.run(
        [sys.executable, "-m", "rnnexp.check_gradients", "model.output=class", f"model.truncation={truncation}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["dU:", "dW:", "dV:", "dVc:"] and all(row[-1] == "ok" for row in rows)


def test_the_class_output_check_fails_on_a_wrong_class_gradient():
    x, y = np.random.default_rng(1).integers(0, 12, (2, 8))
    model = build_model(
        ModelConfig(hidden_dim=4, bptt_truncate=2, truncation="full", dtype="float64", output="class"),
        12,
        1,
        counts=1.0 / np.arange(1, 13),
    )
    right = model.loss_and_grads

    def wrong(x, y):
        loss, grads = right(x, y)
        return loss, {**grads, "Vc": grads["Vc"] * 1.01}

    assert max(relative_errors(model, x, y).values()) < 1e-6
    model.loss_and_grads = wrong
    assert relative_errors(model, x, y)["Vc"] > 1e-3
