"""`python -m experiments.truncation.diagnostics_cost`: what the diagnostics hooks add to a default run.

Trains the default experiment (`python -m rnnexp.run` with no overrides) `REPEATS` times in each of
three ways, interleaved so that other load on the machine hits all three alike: without the hooks,
with them, and with them but never drawing the figure. Prints the median CPU time of each (less
disturbed than wall-clock time by other work on a shared machine), its wall-clock time, and the
time spent inside the gradient diagnostics hook, against the plain run; MLflow goes to a temporary
store.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

import rnnexp.config  # noqa: F401  (registers the run schema)
from rnnexp.diagnostics_hook import DiagnosticsConfig, GradientDiagnostics, evaluation_hooks
from rnnexp.tracking.tables import markdown_table
from rnnexp.tracking import train

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
REPEATS = 5


def timed_run(store: Path, name: str, diagnostics: DiagnosticsConfig | None) -> tuple[float, float, float]:
    """(CPU seconds of the run, its wall-clock seconds, wall-clock seconds inside the gradient diagnostics hook)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"tracking_uri=sqlite:///{store}/mlflow.db", f"experiment_name={name}",
                                           f"train.checkpoint_dir={store}/checkpoints", "diagnostics.enabled=false"])
    # The trainer's own gradient hook is switched off and an equal one passed in, to time it from here.
    hooks = [] if diagnostics is None else evaluation_hooks(diagnostics, lambda: cfg.lr, cfg.epochs)
    cpu, wall = time.process_time(), time.perf_counter()
    train(cfg, eval_hooks=hooks)
    inside = sum(h.seconds for h in hooks if isinstance(h, GradientDiagnostics))
    return time.process_time() - cpu, time.perf_counter() - wall, inside


def main() -> None:
    variants = {"no_hooks": None, "hooks": DiagnosticsConfig(), "hooks_no_figure": DiagnosticsConfig(figure_interval_s=None)}
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        timed_run(store, "warm_up", None)  # the first run pays for creating the store
        for repeat in range(REPEATS):
            for name, diagnostics in variants.items():
                times[name].append(timed_run(store, name, diagnostics))
                print(f"repeat {repeat}: {name}: cpu {times[name][-1][0]:.1f} s, wall {times[name][-1][1]:.1f} s, "
                      f"inside the hook {times[name][-1][2]:.2f} s", flush=True)
    medians = {name: [statistics.median(column) for column in zip(*runs)] for name, runs in times.items()}
    cpu_plain, wall_plain, _ = medians["no_hooks"]
    rows = [[name, f"{cpu:.1f}", f"{100 * (cpu / cpu_plain - 1):+.1f} %", f"{wall:.1f}", f"{100 * (wall / wall_plain - 1):+.1f} %",
             f"{inside:.2f}", f"{100 * inside / wall_plain:.1f} %"] for name, (cpu, wall, inside) in medians.items()]
    print(markdown_table(["run", "median CPU s", "vs no hooks", "median wall s", "vs no hooks", "s inside the hook",
                          "hook / plain run"], rows))


if __name__ == "__main__":
    main()
