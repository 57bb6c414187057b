"""How the truncation reports write their numbers."""

from __future__ import annotations

import math

from experiments.truncation.measure import Cell


def fmt(value: float, digits: int = 2, style: str = "f") -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}{style}}"


def interval_text(cell: Cell, value: str = "dependent_excess") -> str:
    """The cell's mean over its seeds with the 95% interval, as the tables show it."""
    interval = cell.interval(value)
    if math.isnan(interval.mean):
        return "failed"
    return f"{interval.mean:.2f} [{fmt(interval.low)}, {fmt(interval.high)}]"
