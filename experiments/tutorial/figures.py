"""The report's plots, written as PNGs beside it (matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

MEASURED_COLOR, PUBLISHED_COLOR = "tab:blue", "tab:gray"


def _save(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def step_times(measured: Mapping[str, float], published: Mapping[str, float | None], path: Path) -> None:
    """Horizontal bars on a log scale: measured here, then the published figures."""
    bars = [(name, seconds, MEASURED_COLOR) for name, seconds in measured.items()]
    bars += [(f"published: {name}", seconds, PUBLISHED_COLOR) for name, seconds in published.items() if seconds]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.2))
    names = [name for name, _, _ in bars][::-1]
    axes.barh(names, [seconds * 1000 for _, seconds, _ in bars][::-1], color=[color for _, _, color in bars][::-1])
    axes.set_xscale("log")
    axes.set_xlabel("one SGD step, milliseconds (log scale)")
    axes.set_title("One SGD step, V=8000, H=100 (blue: this machine)")
    _save(figure, path)


def loss_curves(curves: Mapping[str, Sequence[float]], baselines: Mapping[str, float], path: Path) -> None:
    """Loss per epoch (epoch 0 = before training), with horizontal ln V lines."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for (name, losses), marker in zip(curves.items(), "os^v"):
        color = PUBLISHED_COLOR if name.startswith("published") else None
        axes.plot(range(len(losses)), losses, marker=marker, label=name, color=color)
    for name, value in baselines.items():
        axes.axhline(value, linestyle="--", linewidth=0.8, color="gray")
        axes.annotate(name, (0, value), textcoords="offset points", xytext=(4, 3), fontsize=8, color="gray")
    axes.set_xlabel("epoch (loss measured before it)")
    axes.set_ylabel("mean loss per word (nats)")
    axes.set_title("SGD on the first 100 sentences, lr 0.005, halved when the loss rises")
    axes.legend()
    _save(figure, path)


def epoch_hours(projected: Mapping[str, float], path: Path, title: str) -> None:
    """Hours per epoch on the full file, log scale."""
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(projected) + 1.2))
    names = list(projected)[::-1]
    axes.barh(names, [projected[name] for name in names], color=MEASURED_COLOR)
    for y, name in enumerate(names):
        hours = projected[name]
        text = f"{hours:.2f} h" if hours >= 0.1 else f"{60 * hours:.1f} min"
        axes.annotate(text, (hours, y), textcoords="offset points", xytext=(4, -3), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(right=max(projected.values()) * 8 if projected else 1)
    axes.set_xlabel("hours per epoch over the full file (log scale)")
    axes.set_title(title)
    _save(figure, path)
