"""The fair protocol's learning rate per model family, chosen on validation from a grid sweep.

Each job of the grid (conf/experiment/truncation_lr_grid.yaml) trains one (family, rate, seed)
at one distance and keeps its best validation loss; a family's rate is the one of lowest mean
best validation loss over its seeds. The test split plays no part. A rate at either end of the
rates tried is flagged: the best may lie beyond the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments.truncation.measure import CELL_NAMES, Interval, history, run_config, t_interval


@dataclass(frozen=True)
class GridPoint:
    """One (family, rate) of the grid: each seed's best validation loss (inf where the job failed)."""

    family: str  # the model's cell: rnn, lstm, gru
    lr: float
    best_val_losses: tuple[float, ...]
    updates: tuple[int, ...]  # each finished seed's optimiser steps, until its early stop

    @property
    def failed(self) -> int:
        return sum(math.isinf(loss) for loss in self.best_val_losses)

    @property
    def mean_loss(self) -> float:
        """What the choice ranks by: inf when any seed failed (a rate that diverges is not a candidate)."""
        return math.fsum(self.best_val_losses) / len(self.best_val_losses)

    @property
    def interval(self) -> Interval:
        return t_interval([loss for loss in self.best_val_losses if not math.isinf(loss)])


@dataclass(frozen=True)
class Choice:
    family: str
    lr: float
    on_edge: bool  # the lowest or highest rate tried: the best may lie beyond the grid
    points: tuple[GridPoint, ...]  # the family's grid, by rate


@dataclass(frozen=True)
class GridSweep:
    """The grid's newest sweep and what it chose."""

    experiment: str  # its MLflow experiment
    sweep: Run  # its parent run
    choices: dict[str, Choice]  # per family


def best_val_loss(client: MlflowClient, run: Run) -> float:
    if run.info.status != "FINISHED":
        return math.inf
    return min((m.value for m in history(client, run.info.run_id, "val_loss")), default=math.inf)


def read_grid(client: MlflowClient, runs: Sequence[Run]) -> list[GridPoint]:
    """The grid sweep's jobs grouped by (family, rate), from each job's saved config."""
    losses: dict[tuple[str, float], list[float]] = {}
    updates: dict[tuple[str, float], list[int]] = {}
    for run in runs:
        cfg = run_config(client, run.info.run_id)
        key = (cfg.model.cell, cfg.optim.lr)
        losses.setdefault(key, []).append(best_val_loss(client, run))
        if run.info.status == "FINISHED":
            steps = history(client, run.info.run_id, "val_loss")
            updates.setdefault(key, []).append(max((m.step for m in steps), default=0))
    return [
        GridPoint(family, lr, tuple(losses[(family, lr)]), tuple(updates.get((family, lr), ())))
        for family, lr in sorted(losses, key=lambda key: (list(CELL_NAMES).index(key[0]), key[1]))
    ]


def choose(points: Sequence[GridPoint]) -> dict[str, Choice]:
    """Per family, the rate of lowest mean best validation loss over the seeds."""
    choices = {}
    for family in dict.fromkeys(point.family for point in points):
        mine = tuple(sorted((p for p in points if p.family == family), key=lambda p: p.lr))
        best = min(mine, key=lambda p: p.mean_loss)
        if math.isinf(best.mean_loss):
            continue  # every rate failed in some seed: nothing to choose
        on_edge = len(mine) > 1 and best.lr in (mine[0].lr, mine[-1].lr)
        choices[family] = Choice(family, best.lr, on_edge, mine)
    return choices
