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


def _bar_legend(axes, colours: Mapping[str, str]) -> None:
    from matplotlib.patches import Patch

    axes.legend(
        handles=[Patch(color=colour, label=label) for label, colour in colours.items()], fontsize=8, loc="lower right"
    )


def step_times(measured: Mapping[str, float], published: Mapping[str, float | None], path: Path) -> None:
    """Horizontal bars on a log scale: measured here, then the published figures."""
    bars = [(name, seconds, MEASURED_COLOR) for name, seconds in measured.items()]
    bars += [(f"published: {name}", seconds, PUBLISHED_COLOR) for name, seconds in published.items() if seconds]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.2))
    names = [name for name, _, _ in bars][::-1]
    axes.barh(names, [seconds * 1000 for _, seconds, _ in bars][::-1], color=[color for _, _, color in bars][::-1])
    axes.set_xscale("log")
    axes.set_xlabel("one SGD step, milliseconds (log scale)")
    axes.set_title("One SGD step, V=8000, H=100")
    _bar_legend(axes, {"measured on this machine": MEASURED_COLOR, "published (2015 laptop)": PUBLISHED_COLOR})
    _save(figure, path)


def loss_curves(panels: Mapping[str, tuple[Mapping[str, Sequence[float]], float]], path: Path) -> None:
    """Loss per epoch (epoch 0 = before training), one panel per vocabulary with its ln V line.

    `panels`: title -> (curves by name, ln V of that vocabulary): losses at different V are not
    comparable, so they never share an axis.
    """
    figure, all_axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for axes, (title, (curves, ln_v)) in zip(all_axes[0], panels.items()):
        for (name, losses), marker in zip(curves.items(), "os^v"):
            color = PUBLISHED_COLOR if name.startswith("published") else None
            axes.plot(range(len(losses)), losses, marker=marker, label=name, color=color)
        axes.axhline(ln_v, linestyle="--", linewidth=0.8, color="gray", label=f"ln V = {ln_v:.3f} (random predictions)")
        axes.set_xlabel("epoch (loss measured before it)")
        axes.set_ylabel("mean loss per word (nats)")
        axes.set_title(title)
        axes.legend(fontsize=8)
    figure.suptitle("SGD on the first 100 sentences, lr 0.005, halved when the loss rises")
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
    _bar_legend(axes, {"projected from step times measured on this machine": MEASURED_COLOR})
    _save(figure, path)
