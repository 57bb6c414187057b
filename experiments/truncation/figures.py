"""The study's figures, on matplotlib's object API (no pyplot, no global backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from experiments.truncation.measure import Cell

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def grid(cells: Sequence[Cell], value: str) -> tuple[list[int], list[str], np.ndarray]:
    """Distances (rows), settings (columns, in sweep order) and the value of each cell (NaN if missing)."""
    distances = sorted({cell.distance for cell in cells})
    settings = list(dict.fromkeys(cell.setting for cell in sorted(cells, key=setting_order)))
    table = np.full((len(distances), len(settings)), math.nan)
    for cell in cells:
        table[distances.index(cell.distance), settings.index(cell.setting)] = getattr(cell, value)
    return distances, settings, table


def setting_order(cell: Cell) -> tuple[int, int, int]:
    """Window settings by reach, full BPTT, then chunk settings by length."""
    return (1 if cell.full_bptt else 0 if cell.truncation == "window" else 2, cell.bptt_truncate, cell.distance)


def gradient_can_reach(cell: Cell) -> bool:
    """Whether training sends the echo's error back to the step that read the key (d - 1 steps).

    Window mode: when bptt_truncate >= d - 1. Chunk mode: only for the echoes whose key lies in
    the same chunk, which needs chunks of at least d steps.
    """
    if cell.truncation == "window":
        return cell.full_bptt or cell.bptt_truncate >= cell.distance - 1
    return cell.bptt_truncate >= cell.distance


def excess_heatmap(cells: Sequence[Cell], ceiling: float) -> Figure:
    """Distance × truncation setting → excess loss on the dependent targets, with its value written in."""
    from matplotlib.figure import Figure

    distances, settings, table = grid(cells, "dependent_excess")
    reach = {(cell.distance, cell.setting) for cell in cells if gradient_can_reach(cell)}
    figure = Figure(figsize=(1.0 + 0.75 * len(settings), 1.4 + 0.6 * len(distances)))
    axes = figure.subplots()
    image = axes.imshow(table, cmap="viridis_r", vmin=0.0, vmax=ceiling, aspect="auto")
    for row, distance in enumerate(distances):
        for column, setting in enumerate(settings):
            value = table[row, column]
            text = "failed" if math.isnan(value) else f"{value:.2f}"
            weight = "bold" if (distance, setting) in reach else "normal"
            axes.text(column, row, text, ha="center", va="center", fontsize=8, weight=weight,
                      color="white" if not math.isnan(value) and value > 0.6 * ceiling else "black")
    axes.set_xticks(range(len(settings)), settings, rotation=45, ha="right")
    axes.set_yticks(range(len(distances)), [str(d) for d in distances])
    axes.set(xlabel="truncation (mode, bptt_truncate)", ylabel="dependency distance d",
             title="excess loss on the dependent targets over the oracle (nats)\nbold: training's gradient can reach the key")
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.tight_layout()
    return figure


def decay_figure(cells: Sequence[Cell], initial: Sequence[float]) -> Figure:
    """How the trained full-BPTT models' gradient fades with steps back, one line per distance, and the untrained one's."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    full = sorted((cell for cell in cells if cell.full_bptt and cell.decay), key=lambda cell: cell.distance)
    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.subplots()
    colours = colormaps["viridis"]
    axes.semilogy(range(len(initial)), initial, linestyle="--", color="grey", label="untrained (initial weights)")
    for i, cell in enumerate(full):
        colour = colours(i / max(1, len(full) - 1))
        axes.semilogy(range(len(cell.decay)), cell.decay, marker=".", color=colour, label=f"trained with d = {cell.distance}")
        axes.plot([cell.distance - 1], [cell.gradient_reach], marker="o", markersize=9, color=colour, fillstyle="none")
    axes.set(xlabel="k (steps back)", ylabel="mean ||∂L_t/∂s_{t-k}|| / mean ||∂L_t/∂s_t||",
             title="gradient reaching k steps back, full-BPTT models after training\n(circles: k = d - 1, the key)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
