"""The study's figures, on matplotlib's object API (no pyplot, no global backend)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from experiments.truncation.measure import LEARNT_EXCESS, Cell

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VERDICT_MARK = {"learnt": "✓", "not learnt": "✗", "undecided": "?", "too few seeds": "·"}


def grid(cells: Sequence[Cell]) -> tuple[list[int], list[str], dict[tuple[int, str], Cell]]:
    """Distances (rows), settings (columns, in table order) and the cell at each (distance, setting)."""
    distances = sorted({cell.distance for cell in cells})
    settings = list(dict.fromkeys(cell.setting for cell in sorted(cells, key=lambda c: c.order)))
    return distances, settings, {(cell.distance, cell.setting): cell for cell in cells}


def excess_heatmap(cells: Sequence[Cell], ceiling: float) -> Figure:
    """Distance × setting → mean excess loss on the dependent targets over the seeds, with its 95% interval."""
    from matplotlib.figure import Figure

    distances, settings, at = grid(cells)
    table = np.full((len(distances), len(settings)), math.nan)
    for (distance, setting), cell in at.items():
        table[distances.index(distance), settings.index(setting)] = cell.interval().mean
    figure = Figure(figsize=(max(8.0, 1.6 + 1.05 * len(settings)), 2.4 + 0.85 * len(distances)))
    axes = figure.subplots()
    image = axes.imshow(table, cmap="viridis_r", vmin=0.0, vmax=ceiling, aspect="auto")
    for row, distance in enumerate(distances):
        for column, setting in enumerate(settings):
            found = at.get((distance, setting))
            if found is None:
                continue
            interval = found.interval()
            text = (
                "failed"
                if math.isnan(interval.mean)
                else (
                    f"{interval.mean:.2f} {VERDICT_MARK[interval.verdict]}\n[{interval.low:.2f}, {interval.high:.2f}]"
                )
            )
            axes.text(
                column,
                row,
                text,
                ha="center",
                va="center",
                fontsize=7,
                weight="bold" if found.reach_possible else "normal",
                color="white" if not math.isnan(interval.mean) and interval.mean > 0.6 * ceiling else "black",
            )
    axes.set_xticks(range(len(settings)), settings, rotation=45, ha="right")
    axes.set_yticks(range(len(distances)), [str(d) for d in distances])
    n_seeds = max((len(cell.finished) for cell in cells), default=0)
    axes.set(
        xlabel="setting (cell, truncation, bptt_truncate)",
        ylabel="dependency distance d",
        title=f"excess loss on the dependent targets, mean of {n_seeds} seeds [95% t interval]\n"
        f"✓ learnt (interval below {LEARNT_EXCESS}), ✗ not learnt (above), ? undecided\n"
        "bold: training's gradient can reach the key",
    )
    bar = figure.colorbar(image, ax=axes, shrink=0.8)
    bar.set_label("mean excess over the oracle (nats / target)")
    figure.tight_layout()
    return figure


def decay_figure(cells: Sequence[Cell], initial: Mapping[str, Sequence[float]]) -> Figure:
    """How the trained full-BPTT models' gradient fades with steps back (mean over seeds), one line per cell."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    full = sorted(
        (cell for cell in cells if cell.setting.endswith("full") and cell.finished),
        key=lambda cell: (cell.order, cell.distance),
    )
    figure = Figure(figsize=(7.5, 5.0))
    axes = figure.subplots()
    colours = colormaps["viridis"]
    styles = {"": "-", "LSTM ": "--", "GRU ": ":"}
    for name, decay in initial.items():
        axes.semilogy(
            range(len(decay)),
            decay,
            color="grey",
            linestyle=styles.get(name, "-"),
            linewidth=0.8,
            label=f"{name or 'RNN '}untrained",
        )
    distances = sorted({cell.distance for cell in full})
    for cell in full:
        decay = np.exp(np.mean([np.log(np.maximum(job.decay, 1e-30)) for job in cell.finished if job.decay], axis=0))
        colour = colours(distances.index(cell.distance) / max(1, len(distances) - 1))
        prefix = cell.setting[: -len("full")]
        axes.semilogy(
            range(len(decay)),
            decay,
            color=colour,
            linestyle=styles.get(prefix, "-"),
            marker=".",
            label=f"{prefix or 'RNN '}full BPTT, trained with d = {cell.distance}",
        )
        axes.plot(
            [cell.distance - 1], [decay[cell.distance - 1]], marker="o", markersize=9, color=colour, fillstyle="none"
        )
    axes.set(
        xlabel="k (steps back)",
        ylabel="mean ||∂L_t/∂s_{t-k}|| / mean ||∂L_t/∂s_t|| (geometric mean of seeds)",
        title="gradient reaching k steps back, full-BPTT models after training\n(circles: k = d - 1, the key)",
    )
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return figure
