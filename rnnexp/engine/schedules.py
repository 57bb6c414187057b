"""Learning-rate schedules as pure functions of training progress and the losses observed so far.

Nothing here holds state: given the same epoch and the same loss history, a schedule returns the
same rate, so a resumed run needs only the history (kept in its checkpoint) to continue exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rnnexp.config.schema import ScheduleConfig


def halvings(cfg: ScheduleConfig, losses: Sequence[float]) -> int:
    """How many times the loss-driven schedules have cut the rate, given the losses checked so far."""
    if cfg.name == "halve_on_rise":  # the tutorial: halve each time the loss rose since the last check
        return sum(1 for prev, new in zip(losses, losses[1:]) if new > prev)
    if cfg.name == "newbob":  # Mikolov: once the improvement stalls, decay at every check from then on
        for i, (prev, new) in enumerate(zip(losses, losses[1:])):
            if prev < new * cfg.min_improvement:
                return len(losses) - 1 - i
    if cfg.name == "plateau":  # word_language_model: cut whenever the loss did not beat the best so far
        return sum(1 for i in range(1, len(losses)) if losses[i] >= min(losses[:i]))
    return 0


def learning_rate(cfg: ScheduleConfig, base_lr: float, epoch: float, losses: Sequence[float] = ()) -> float:
    """The rate at `epoch` (fractional progress), given the monitored losses checked so far."""
    if cfg.name in ("halve_on_rise", "newbob", "plateau"):
        return base_lr * cfg.gamma ** halvings(cfg, losses)
    if cfg.name == "step":
        return base_lr * cfg.gamma ** math.floor(epoch / cfg.step_epochs)
    if cfg.name == "exponential":
        return base_lr * cfg.gamma**epoch
    if cfg.name == "hold_then_decay":  # Zaremba et al.: full rate for hold_epochs epochs, then × gamma per epoch
        return base_lr * cfg.gamma ** max(0, math.floor(epoch) + 1 - cfg.hold_epochs)
    return base_lr


def checks_loss(cfg: ScheduleConfig, epochs_done: int) -> bool:
    """Whether the schedule wants a loss measurement after `epochs_done` complete epochs."""
    if cfg.name == "halve_on_rise":
        return epochs_done % cfg.evaluate_loss_after == 0
    return cfg.name in ("newbob", "plateau")
