"""Figures logged with runs, drawn on matplotlib's object API (no pyplot, no global backend).

matplotlib is imported when a figure is drawn, not at start-up, where it would cost every run
and every sweep worker about a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from matplotlib.figure import Figure


def learning_curves(history: Sequence[dict], oracle_nll: float | None) -> Figure:
    """Loss per epoch (training and validation) and validation perplexity, with the oracle's floor."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    loss_axes, ppl_axes = figure.subplots(1, 2)
    epochs = [entry["epoch"] for entry in history]
    trained = [entry for entry in history if entry["train_loss_epoch"] is not None]
    loss_axes.plot([e["epoch"] for e in trained], [e["train_loss_epoch"] for e in trained], marker="o",
                   label="train (epoch mean)")
    loss_axes.plot(epochs, [entry["val_loss"] for entry in history], marker="o", label="validation")
    ppl_axes.plot(epochs, [math.exp(entry["val_loss"]) for entry in history], marker="o", label="validation")
    if oracle_nll is not None:
        loss_axes.axhline(oracle_nll, color="black", linestyle="--", linewidth=1, label="oracle")
        ppl_axes.axhline(math.exp(oracle_nll), color="black", linestyle="--", linewidth=1, label="oracle")
    loss_axes.set(xlabel="epoch", ylabel="loss (nats per token)", title="loss")
    ppl_axes.set(xlabel="epoch", ylabel="perplexity", yscale="log", title="validation perplexity")
    for axes in (loss_axes, ppl_axes):
        axes.legend()
    figure.tight_layout()
    return figure
