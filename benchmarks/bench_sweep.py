"""A 4-job sweep through `python -m rnnexp.run ... -m`, with the joblib launcher against the basic one.

The basic launcher runs the jobs one after another in the sweep's process; joblib runs them in
worker processes, one per core, each with one BLAS thread (the runner's rule for parallel jobs),
started as the sweep starts (rnnexp.callbacks). Each sweep is one command, timed from start to
exit, process start-up and MLflow included; the two launchers take turns, logging to one sqlite
store created beforehand. Beside the wall-clock time:
- the CPU seconds of the command and all its worker processes: the work each launcher does. That
  work spread perfectly over the cores is the least time any launcher could take for it;
- the phases of each sweep, from its runs' start and end times in the store: start-up until the
  parent run exists, until the first job's run, the jobs, the comparison, and the exit.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from benchmarks.common import REPEATS, ROOT, THREADS, Timing
from rnnexp import tracking

LAUNCHERS = {"basic": ["hydra/launcher=basic"], "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={THREADS}"]}
FULL = ["model.hidden_dim=32,48,64,80"]  # four runs of the default experiment at its own size (10 epochs)
TARGET_TIME_RATIO = 0.6  # joblib's sweep in at most this share of the basic launcher's time
SMOKE = [
    "model.hidden_dim=4,6",
    "dataset.vocab_size=30",
    "train.epochs=1",
    "dataset.synthetic.n_sentences=100",
    "train.samples=1",
]


def store_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir}/mlflow.db"


PHASES = ("start-up until the parent run", "until the first job", "jobs", "comparison", "exit")


def sweep_seconds(launcher: str, overrides: list[str], workdir: Path) -> tuple[float, float, dict[str, float]]:
    """Wall-clock and CPU seconds (the command and its workers) of one sweep, and its phases; raises with its
    stderr if it fails."""
    sweep_dir = workdir / "sweeps" / f"{launcher}-{time.monotonic_ns()}"
    command = [
        sys.executable,
        "-m",
        "rnnexp.run",
        "-m",
        *overrides,
        *LAUNCHERS[launcher],
        f"tracking_uri={store_uri(workdir)}",
        f"train.checkpoint_dir={workdir}/checkpoints",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before, start, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter(), time.time()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    seconds, after, ended = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    if done.returncode != 0:
        raise RuntimeError(f"the {launcher} sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, phases(MlflowClient(store_uri(workdir)), sweep_dir, started, ended)


def phases(client: MlflowClient, sweep_dir: Path, started: float, ended: float) -> dict[str, float]:
    """Seconds of each of PHASES for the sweep in `sweep_dir`, from its runs' times in the store."""
    runs = client.search_runs([client.get_experiment_by_name("rnnexp").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep_dir") == str(sweep_dir.resolve())]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    first_job = min(r.info.start_time for r in jobs) / 1000
    last_job = max(r.info.end_time for r in jobs) / 1000
    marks = [started, parent.info.start_time / 1000, first_job, last_job, parent.info.end_time / 1000, ended]
    return {name: b - a for name, a, b in zip(PHASES, marks[:-1], marks[1:])}


def worker_start_seconds() -> float:
    """Wall seconds for a fresh Python to do what the sweep has each joblib worker do before its first job
    (`rnnexp.callbacks.prepare_worker`): the cost each worker pays once, which the basic launcher's one process
    pays with the sweep's."""
    start = time.perf_counter()
    prepare = "from rnnexp.callbacks import prepare_worker; prepare_worker(None)"
    subprocess.run([sys.executable, "-c", prepare], check=True, cwd=ROOT)
    return time.perf_counter() - start


def run(smoke: bool = False) -> dict:
    """Seconds per sweep with each launcher (median of the rounds) and joblib's speed-up."""
    overrides, repeats = (SMOKE, 1) if smoke else (FULL, REPEATS)
    samples: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    cpu: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in LAUNCHERS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tracking.experiment_id(tracking.connect(store_uri(workdir)), "rnnexp")  # create the store untimed
        for round_ in range(repeats):
            for name in sorted(LAUNCHERS, reverse=bool(round_ % 2)):
                wall, used, phase = sweep_seconds(name, overrides, workdir)
                samples[name].append(wall)
                cpu[name].append(used)
                parts[name].append(phase)
    seconds = {name: statistics.median(s) for name, s in samples.items()}
    cpu_seconds = {name: statistics.median(c) for name, c in cpu.items()}
    jobs = len(overrides[0].split("=", 1)[1].split(","))
    worker_start = statistics.median(worker_start_seconds() for _ in range(repeats))
    return {
        "description": (
            f"`python -m rnnexp.run {' '.join(overrides)} -m`: {jobs} jobs, with `hydra/launcher=basic` and with "
            f"`hydra/launcher=joblib hydra.launcher.n_jobs={THREADS}`; whole commands, "
            f"medians of {repeats} alternating runs."
        ),
        "samples": samples,
        "spread": {name: Timing(s).spread for name, s in samples.items()},
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "phases": {
            name: {p: statistics.median(run[p] for run in runs) for p in PHASES} for name, runs in parts.items()
        },
        # the joblib sweep's work spread perfectly over the cores, against the basic launcher's time
        "cpu_floor_ratio": cpu_seconds["joblib"] / THREADS / seconds["basic"],
        "speedup": seconds["basic"] / seconds["joblib"],
        "time_ratio": seconds["joblib"] / seconds["basic"],
        "target_time_ratio": TARGET_TIME_RATIO,
        "target_met": seconds["joblib"] <= TARGET_TIME_RATIO * seconds["basic"],
        "jobs": jobs,
        "worker_start_seconds": worker_start,
    }
