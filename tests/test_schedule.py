"""Learning-rate schedules are pure functions of progress and the loss history."""

import pytest

from rnnexp.config import ScheduleConfig
from rnnexp.config.resolve import validate_schedule as validate
from rnnexp.engine.schedules import checks_loss, learning_rate
from rnnexp.errors import UserError


def test_tutorial_halves_each_time_the_loss_rose():
    cfg = ScheduleConfig(name="halve_on_rise")
    assert learning_rate(cfg, 0.005, 0, []) == 0.005
    assert learning_rate(cfg, 0.005, 3, [8.9, 6.1, 6.3, 5.0]) == 0.0025
    assert learning_rate(cfg, 0.005, 5, [8.9, 6.1, 6.3, 6.4, 5.0]) == 0.00125


def test_tutorial_checks_the_loss_every_evaluate_loss_after_epochs_from_the_start():
    cfg = ScheduleConfig(name="halve_on_rise", evaluate_loss_after=5)
    assert [e for e in range(12) if checks_loss(cfg, e)] == [0, 5, 10]


def test_newbob_keeps_decaying_once_improvement_stalls():
    cfg = ScheduleConfig(name="newbob", min_improvement=1.01, monitor="valid")
    assert learning_rate(cfg, 1.0, 3, [5.0, 4.0, 3.0]) == 1.0
    assert learning_rate(cfg, 1.0, 4, [5.0, 4.0, 3.99]) == 0.5
    assert learning_rate(cfg, 1.0, 5, [5.0, 4.0, 3.99, 3.5]) == 0.25


def test_plateau_divides_whenever_validation_did_not_beat_the_best_so_far():
    cfg = ScheduleConfig(name="plateau", gamma=0.25, monitor="valid")
    assert checks_loss(cfg, 0) and checks_loss(cfg, 7)
    assert learning_rate(cfg, 20.0, 2, [6.0, 5.0]) == 20.0
    assert learning_rate(cfg, 20.0, 3, [6.0, 5.0, 5.1]) == 5.0  # worse than the best: ÷4
    assert learning_rate(cfg, 20.0, 4, [6.0, 5.0, 5.1, 5.05]) == 1.25  # better than the last, not the best: ÷4 again
    assert learning_rate(cfg, 20.0, 5, [6.0, 5.0, 5.1, 5.05, 4.9]) == 1.25  # a new best: no cut


def test_step_and_exponential_decay_by_epoch():
    assert learning_rate(ScheduleConfig(name="step", step_epochs=2, gamma=0.1), 1.0, 3.9) == pytest.approx(0.1)
    assert learning_rate(ScheduleConfig(name="exponential", gamma=0.5), 1.0, 1.5) == pytest.approx(0.5**1.5)
    assert learning_rate(ScheduleConfig(), 0.3, 100, [1, 2, 3]) == 0.3


@pytest.mark.parametrize(
    "cfg",
    [
        ScheduleConfig(name="cosine"),
        ScheduleConfig(gamma=0),
        ScheduleConfig(step_epochs=0),
        ScheduleConfig(monitor="test"),
    ],
)
def test_impossible_schedules_are_refused(cfg):
    with pytest.raises(UserError):
        validate(cfg)
