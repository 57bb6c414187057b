"""A 4-job sweep through `python -m rnnexp.run ... -m`, with the joblib launcher against the basic one.

The basic launcher runs the jobs one after another in the sweep's process; joblib runs them in
worker processes, one per core, each with one BLAS thread (the runner's rule for parallel jobs).
Each sweep is one command, timed from start to exit, process start-up and MLflow included; the
two launchers take turns, logging to one sqlite store created beforehand. Beside the wall-clock
time, the CPU seconds of the command and all its worker processes: the work each launcher does,
which other jobs on a shared machine move far less.
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

from benchmarks.common import REPEATS, ROOT, THREADS, Timing
from rnnexp import tracking

LAUNCHERS = {"basic": ["hydra/launcher=basic"], "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={THREADS}"]}
FULL = ["hidden_dim=32,48,64,80"]  # four runs of the default experiment at its own size (10 epochs)
TARGET_TIME_RATIO = 0.6  # joblib's sweep in at most this share of the basic launcher's time
SMOKE = ["hidden_dim=4,6", "vocab_size=30", "epochs=1", "dataset.synthetic.n_sentences=100", "train.samples=1"]


def store_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir}/mlflow.db"


def sweep_seconds(launcher: str, overrides: list[str], workdir: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds (the command and its workers) of one sweep; raises with its stderr if it fails."""
    command = [
        sys.executable,
        "-m",
        "rnnexp.run",
        "-m",
        *overrides,
        *LAUNCHERS[launcher],
        f"tracking_uri={store_uri(workdir)}",
        f"train.checkpoint_dir={workdir}/checkpoints",
        f"hydra.sweep.dir={workdir}/sweeps/{launcher}-{time.monotonic_ns()}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the {launcher} sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def worker_start_seconds() -> float:
    """Wall seconds for a fresh Python to import what a joblib worker needs before its first job (Hydra, the
    trainer, MLflow): the cost each worker pays once, which the basic launcher's one process pays with the sweep's."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import rnnexp.run, rnnexp.tracking.session"], check=True, cwd=ROOT)
    return time.perf_counter() - start


def serial_share(basic: float, joblib: float, worker_start: float, jobs: int) -> dict:
    """The sweep split into its serial part C (start-up, parent run, comparison) and J per job, from
    basic = C + jobs·J and joblib = C + worker_start + (jobs / THREADS)·J, and the joblib/basic ratio
    a sweep would reach if its workers started for free: (C + (jobs / THREADS)·J) / (C + jobs·J)."""
    per_job = (basic - joblib + worker_start) / (jobs - jobs / THREADS)
    serial = basic - jobs * per_job
    return {
        "serial_seconds": serial,
        "per_job_seconds": per_job,
        "free_workers_ratio": (serial + jobs / THREADS * per_job) / basic,
    }


def run(smoke: bool = False) -> dict:
    """Seconds per sweep with each launcher (median of the rounds) and joblib's speed-up."""
    overrides, repeats = (SMOKE, 1) if smoke else (FULL, REPEATS)
    samples: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    cpu: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tracking.experiment_id(tracking.connect(store_uri(workdir)), "rnnexp")  # create the store untimed
        for round_ in range(repeats):
            for name in sorted(LAUNCHERS, reverse=bool(round_ % 2)):
                wall, used = sweep_seconds(name, overrides, workdir)
                samples[name].append(wall)
                cpu[name].append(used)
    seconds = {name: statistics.median(s) for name, s in samples.items()}
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
        "cpu_seconds": {name: statistics.median(c) for name, c in cpu.items()},
        "speedup": seconds["basic"] / seconds["joblib"],
        "time_ratio": seconds["joblib"] / seconds["basic"],
        "target_time_ratio": TARGET_TIME_RATIO,
        "target_met": seconds["joblib"] <= TARGET_TIME_RATIO * seconds["basic"],
        "jobs": jobs,
        "worker_start_seconds": worker_start,
        **serial_share(seconds["basic"], seconds["joblib"], worker_start, jobs),
    }
