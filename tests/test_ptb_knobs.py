"""The knobs the PTB recipes of the literature need: Zaremba et al.'s schedule and initialisation range."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from rnnexp.config import ScheduleConfig, compose_run, resolve
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.schedules import checks_loss, learning_rate
from rnnexp.errors import UserError


def test_hold_then_decay_keeps_the_rate_for_hold_epochs_then_multiplies_by_gamma_per_epoch() -> None:
    cfg = ScheduleConfig(name="hold_then_decay", hold_epochs=4, gamma=0.5)
    # epochs 1-4 (progress 0 to 3.99) at the full rate, the 5th at half, the 13th at 0.5**9
    rates = [learning_rate(cfg, 20.0, epoch) for epoch in (0.0, 2.5, 3.99, 4.0, 4.7, 5.0, 12.5)]
    assert rates == [20.0, 20.0, 20.0, 10.0, 10.0, 5.0, 20.0 * 0.5**9]
    assert not checks_loss(cfg, 3)  # a fixed timetable: no loss measurement needed


def test_hold_then_decay_for_the_medium_model_divides_by_1_2() -> None:
    cfg = ScheduleConfig(name="hold_then_decay", hold_epochs=6, gamma=1 / 1.2)
    assert learning_rate(cfg, 35.0, 5.9) == 35.0
    assert learning_rate(cfg, 35.0, 6.0) == pytest.approx(35.0 / 1.2)
    assert learning_rate(cfg, 35.0, 38.5) == pytest.approx(35.0 / 1.2**33)


def test_the_schedule_and_init_range_compose_and_bad_values_are_user_errors() -> None:
    run = resolve(compose_run(["schedule=hold_then_decay", "schedule.hold_epochs=2", "model.init_range=0.1"]))
    assert (run.schedule.name, run.schedule.hold_epochs, run.schedule.gamma) == ("hold_then_decay", 2, 0.5)
    assert run.model.init_range == 0.1
    with pytest.raises(UserError, match="schedule.hold_epochs must be >= 0"):
        resolve(compose_run(["schedule=hold_then_decay", "schedule.hold_epochs=-1"]))
    with pytest.raises(UserError, match="model.init_range must be a finite number > 0 or null"):
        resolve(compose_run(["model.init_range=0"]))


def model_config(**changes: Any) -> ModelConfig:
    base = ModelConfig(cell="lstm", hidden_dim=8, bptt_truncate=5, truncation="chunk", layers=2)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "changes",
    [{}, {"cell": "gru"}, {"cell": "rnn", "layers": 1}, {"tie_weights": True}, {"output": "class", "classes": 3}],
)
def test_init_range_puts_every_parameter_in_range_and_null_keeps_the_default_init(changes: dict) -> None:
    counts = np.arange(30, 0, -1)
    default = build_model(model_config(**changes), 30, seed=3, counts=counts)
    again = build_model(model_config(init_range=None, **changes), 30, seed=3, counts=counts)
    ranged = build_model(model_config(init_range=0.05, **changes), 30, seed=3, counts=counts)
    assert default.params.keys() == ranged.params.keys()
    for name, value in ranged.params.items():
        assert np.array_equal(default.params[name], again.params[name])  # null: the cell's own init, bitwise
        assert value.dtype == default.params[name].dtype and value.shape == default.params[name].shape
        assert np.abs(value).max() <= 0.05, name
        assert np.abs(value).max() > 0.025, name  # drawn across the range, biases included (seeded)
    assert np.abs(default.params["U"]).max() > 0.05  # the default init is wider: the knob changed it


def test_init_range_reaches_the_output_layer_the_model_computes_with() -> None:
    """The in-place draw keeps the output layer's views: the loss is that of the redrawn weights."""
    cfg = model_config(init_range=0.01, output="class", classes=3)
    model = build_model(cfg, 30, seed=0, counts=np.arange(30, 0, -1))
    x = np.arange(10, dtype=np.int32).reshape(2, 5)
    y = (x + 1) % 30
    nll, _ = model.token_nll(x, y)
    # weights within ±0.01 leave the class and the word within it nearly uniform: log C + log |class|
    word_class = model.buffers["word_class"]
    expected = np.log(3) + np.log(np.bincount(word_class)[word_class[y]])
    assert np.allclose(nll, expected, atol=0.05)
