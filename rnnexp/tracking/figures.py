"""The sweep parent's figure: every child's validation curve on the same axes as MLflow's charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEGEND_COLUMN = 15  # runs per legend column


def validation_curves(runs: Sequence[Run], curves: dict[str, list[Metric]]) -> Figure:
    """Each run's validation perplexity against the training step, in the order given (best first),
    with the oracle's floor if known; the legend beside the axes, not over the curves."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5), layout="constrained")
    axes = figure.subplots()
    for run in runs:
        history = sorted(curves[run.info.run_id], key=lambda m: m.step)
        axes.plot(
            [m.step for m in history], [m.value for m in history], marker="o", markersize=3, label=run.info.run_name
        )
    oracle = next((run.data.metrics["oracle_val_ppl"] for run in runs if "oracle_val_ppl" in run.data.metrics), None)
    if oracle is not None:
        axes.axhline(oracle, color="black", linestyle="--", linewidth=1, label="oracle (the generator)")
    axes.set(
        xlabel="training step",
        ylabel="validation perplexity (log scale)",
        yscale="log",
        title="Validation perplexity of each run of the sweep, best first",
    )
    figure.legend(loc="outside right upper", fontsize="small", ncols=1 + len(runs) // LEGEND_COLUMN)
    return figure
