"""`python -m experiments.truncation.diagnostics_cost`: what the diagnostics hooks add to a default run.

Trains the default experiment (`python -m rnnexp.run` with no overrides) `REPEATS` times in each of
three ways, interleaved so that other load on the machine hits all three alike: without the hooks,
with them, and with them but never drawing the figure. Prints the median wall-clock time of each
and the time spent inside the hooks, as a share of the plain run; MLflow goes to a temporary store.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

import rnnexp.config  # noqa: F401  (registers the run schema)
from rnnexp.diagnostics_hook import DiagnosticsConfig, GradientDiagnostics, evaluation_hooks
from rnnexp.sweep import markdown_table
from rnnexp.train import train

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
REPEATS = 3


def timed_run(store: Path, name: str, diagnostics: DiagnosticsConfig | None) -> tuple[float, float]:
    """(wall-clock seconds of the run, seconds inside the gradient diagnostics hook)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking_uri=sqlite:///{store}/mlflow.db", f"experiment_name={name}",
                                           f"train.checkpoint_dir={store}/checkpoints"])
    hooks = [] if diagnostics is None else evaluation_hooks(diagnostics, lambda: cfg.lr, cfg.epochs)
    started = time.perf_counter()
    train(cfg, eval_hooks=hooks)
    return time.perf_counter() - started, sum(h.seconds for h in hooks if isinstance(h, GradientDiagnostics))


def main() -> None:
    variants = {"no hooks": None, "hooks (default)": DiagnosticsConfig(), "hooks, no figure": DiagnosticsConfig(figure_interval_s=None)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        timed_run(store, "warm-up", None)  # the first run pays for creating the store
        for _ in range(REPEATS):
            for name, diagnostics in variants.items():
                times[name].append(timed_run(store, name.replace(" ", "_").replace(",", ""), diagnostics))
    plain = statistics.median(wall for wall, _ in times["no hooks"])
    rows = []
    for name, runs in times.items():
        wall, inside = statistics.median(w for w, _ in runs), statistics.median(s for _, s in runs)
        rows.append([name, f"{wall:.1f}", f"{100 * (wall / plain - 1):+.1f} %", f"{inside:.2f}", f"{100 * inside / plain:.1f} %"])
    print(markdown_table(["run", "median wall s", "vs no hooks", "s inside the hook", "hook / run"], rows))


if __name__ == "__main__":
    main()
