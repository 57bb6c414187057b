"""The sweep parent's figure: every child's validation curve on the same axes as MLflow's charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def validation_curves(runs: Sequence[Run], curves: dict[str, list[Metric]]) -> Figure:
    """Each run's validation perplexity against training steps, with the oracle's floor if known."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for run in runs:
        history = curves[run.info.run_id]
        axes.plot([m.step for m in history], [m.value for m in history], marker="o", markersize=3,
                  label=run.info.run_name)
    oracle = next((run.data.metrics["oracle_val_ppl"] for run in runs if "oracle_val_ppl" in run.data.metrics), None)
    if oracle is not None:
        axes.axhline(oracle, color="black", linestyle="--", linewidth=1, label="oracle")
    axes.set(xlabel="training step", ylabel="validation perplexity", yscale="log", title="validation perplexity by job")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
