"""Learning-rate schedules as pure functions of training progress and the losses observed so far.

Nothing here holds state: given the same epoch and the same loss history, a schedule returns the
same rate, so a resumed run needs only the history (kept in its checkpoint) to continue exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rnnexp.errors import UserError

SCHEDULES = ("constant", "halve_on_rise", "newbob", "step", "exponential")


@dataclass
class ScheduleConfig:
    """Which schedule, and its knobs (each schedule reads only its own)."""

    name: str = "constant"
    factor: float = 0.5  # halve_on_rise, newbob: multiply the rate by this at each trigger
    evaluate_loss_after: int = 1  # halve_on_rise: epochs between loss checks (the tutorial's knob)
    monitor: str = "train"  # which loss the history holds: train (the tutorial) or valid (newbob)
    min_improvement: float = 1.003  # newbob: start decaying once loss_prev / loss_new < this
    step_epochs: int = 10  # step: decay every this many epochs
    gamma: float = 0.5  # step, exponential: decay factor per step / per epoch


def validate(cfg: ScheduleConfig) -> None:
    if cfg.name not in SCHEDULES:
        raise UserError(f"unknown schedule {cfg.name!r}: choose one of {', '.join(SCHEDULES)}.")
    if not 0 < cfg.factor <= 1 or not 0 < cfg.gamma <= 1:
        raise UserError(f"schedule factor and gamma must lie in (0, 1], got {cfg.factor} and {cfg.gamma}.")
    if cfg.evaluate_loss_after < 1 or cfg.step_epochs < 1:
        raise UserError("schedule evaluate_loss_after and step_epochs must be >= 1.")
    if cfg.monitor not in ("train", "valid"):
        raise UserError(f"schedule monitor must be 'train' or 'valid', got {cfg.monitor!r}.")


def halvings(cfg: ScheduleConfig, losses: Sequence[float]) -> int:
    """How many times the loss-driven schedules have cut the rate, given the losses checked so far."""
    if cfg.name == "halve_on_rise":  # the tutorial: halve each time the loss rose since the last check
        return sum(1 for prev, new in zip(losses, losses[1:]) if new > prev)
    if cfg.name == "newbob":  # Mikolov: once the improvement stalls, decay at every check from then on
        for i, (prev, new) in enumerate(zip(losses, losses[1:])):
            if prev < new * cfg.min_improvement:
                return len(losses) - 1 - i
    return 0


def learning_rate(cfg: ScheduleConfig, base_lr: float, epoch: float, losses: Sequence[float] = ()) -> float:
    """The rate at `epoch` (fractional progress), given the monitored losses checked so far."""
    if cfg.name in ("halve_on_rise", "newbob"):
        return base_lr * cfg.factor ** halvings(cfg, losses)
    if cfg.name == "step":
        return base_lr * cfg.gamma ** math.floor(epoch / cfg.step_epochs)
    if cfg.name == "exponential":
        return base_lr * cfg.gamma**epoch
    return base_lr


def checks_loss(cfg: ScheduleConfig, epochs_done: int) -> bool:
    """Whether the schedule wants a loss measurement after `epochs_done` complete epochs."""
    if cfg.name == "halve_on_rise":
        return epochs_done % cfg.evaluate_loss_after == 0
    return cfg.name == "newbob"
