"""Figures logged with runs, drawn on matplotlib's object API (no pyplot, no global backend).

matplotlib is imported when a figure is drawn, not at start-up, where it would cost every run
and every sweep worker about a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRAIN_COLOR, VALID_COLOR = "tab:blue", "tab:orange"


def learning_curves(history: Sequence[dict], oracle_nll: float | None) -> Figure:
    """Loss (training and validation) and validation perplexity against the training step, the x-axis
    of MLflow's charts, with epochs on a second axis above and the oracle's floor where known."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_axes, ppl_axes = figure.subplots(1, 2)
    steps = [entry["step"] for entry in history]
    trained = [entry for entry in history if entry["train_loss_epoch"] is not None]
    loss_axes.plot(
        [e["step"] for e in trained],
        [e["train_loss_epoch"] for e in trained],
        marker="o",
        color=TRAIN_COLOR,
        label="training (mean over the epoch)",
    )
    loss_axes.plot(steps, [entry["val_loss"] for entry in history], marker="o", color=VALID_COLOR, label="validation")
    ppl_axes.plot(steps, [math.exp(entry["val_loss"]) for entry in history], marker="o", color=VALID_COLOR)
    if oracle_nll is not None:
        loss_axes.axhline(oracle_nll, color="black", linestyle="--", linewidth=1, label="oracle (the generator)")
        ppl_axes.axhline(math.exp(oracle_nll), color="black", linestyle="--", linewidth=1)
    loss_axes.set(xlabel="training step", ylabel="loss (nats per token)", title="Loss")
    ppl_axes.set(xlabel="training step", ylabel="perplexity (log scale)", yscale="log", title="Validation perplexity")
    for axes in (loss_axes, ppl_axes):
        epoch_axis(axes, history)
    figure.legend(*loss_axes.get_legend_handles_labels(), loc="outside right upper")
    return figure


def epoch_axis(axes: Axes, history: Sequence[dict]) -> None:
    """Epochs on a second x-axis above the steps, read off the evaluations (one after each epoch) and
    extended past them, so that the axes' margins keep the scale."""
    from matplotlib.ticker import MaxNLocator
    from scipy.interpolate import interp1d

    steps = np.array([entry["step"] for entry in history], float)
    epochs = np.array([entry["epoch"] for entry in history], float)
    if len(steps) < 2 or np.any(np.diff(steps) <= 0):
        return
    top = axes.secondary_xaxis(
        "top",
        functions=(
            interp1d(steps, epochs, fill_value="extrapolate"),
            interp1d(epochs, steps, fill_value="extrapolate"),
        ),
    )
    top.set_xlabel("epoch")
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
