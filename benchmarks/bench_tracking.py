"""What MLflow tracking costs a run: the same training with logging to a sqlite store, and without.

Both sides call `rnnexp.train.train` on the same composed config. Without tracking, the run logger
is replaced by one that drops everything, so all the training loop's own work (evaluations,
checkpoint files, samples, the curves figure) still happens and only MLflow's part is left out.
The store is created by the warm-up run, so its one-time schema set-up is not counted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

from hydra import compose, initialize_config_dir

import rnnexp.config  # noqa: F401  (registers the schemas the configs name)
from benchmarks.common import REPEATS, ROOT, fixed_threads, interleaved
from rnnexp import tracking
from rnnexp.tracking import train

# The default experiment, 3 epochs, one BLAS thread: CPU time then measures the work alone.
FULL = ["train.epochs=3", "blas_threads=1"]
SMOKE = [
    "model.hidden_dim=8",
    "dataset.vocab_size=40",
    "train.epochs=1",
    "dataset.synthetic.n_sentences=200",
    "train.samples=1",
    "blas_threads=1",
]


class UntrackedRun(tracking.RunLogger):
    """A run logger that logs nothing: every public method of RunLogger is a no-op here."""

    def __init__(self, *args, **kwargs):
        self.run_id = "untracked"


for _method in [
    name for name, value in vars(tracking.RunLogger).items() if callable(value) and not name.startswith("_")
]:
    setattr(UntrackedRun, _method, lambda self, *args, **kwargs: None)


def _config(workdir: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                *overrides,
                f"tracking_uri=sqlite:///{workdir}/mlflow.db",
                f"train.checkpoint_dir={workdir}/checkpoints",
            ],
        )


def _untracked(cfg) -> None:
    with (
        mock.patch.object(tracking, "connect", return_value=None),
        mock.patch.object(tracking, "create_run", return_value=UntrackedRun()),
    ):
        train(cfg)


def run(smoke: bool = False) -> dict:
    """Seconds per run with and without MLflow tracking, and the relative overhead."""
    overrides, repeats = (SMOKE, 1) if smoke else (FULL, REPEATS)
    with tempfile.TemporaryDirectory() as tmp, fixed_threads():
        cfg = _config(Path(tmp), overrides)
        timings = interleaved(
            {"with MLflow tracking": lambda: train(cfg), "without tracking": lambda: _untracked(cfg)},
            repeats=repeats,
            min_seconds=0.0,
            block=1,
        )
    on, off = timings["with MLflow tracking"], timings["without tracking"]
    return {
        "description": (
            f"`rnnexp.train.train` on the default experiment ({' '.join(overrides)}), logging to a sqlite store, "
            f"against the same run with a run logger that drops everything; medians of {repeats} interleaved runs. "
            "The overhead is taken from the process's CPU time, which other work on the machine barely moves; "
            "wall-clock time is shown beside it."
        ),
        "overrides": overrides,
        "seconds_per_run": {name: t.median for name, t in timings.items()},
        "spread": {name: t.spread for name, t in timings.items()},
        "cpu_seconds_per_run": {name: t.cpu_median for name, t in timings.items()},
        "overhead": on.cpu_median / off.cpu_median - 1.0,
        "overhead_cpu_seconds": on.cpu_median - off.cpu_median,
        "wall_overhead": on.median / off.median - 1.0,
    }
