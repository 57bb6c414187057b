"""What `python -m rnnexp.run` runs besides a plain run: a sweep's job, and `resume=` of a run or a sweep.

A job is a child run of the sweep's parent (tracking.sweep), named after its swept values. It stops
when the sweep's STOP file appears, leaves its reason in the sweep directory when it fails, and in
a resumed sweep (`resume=<parent>`) skips a job that finished or continues its unfinished run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from rnnexp.config import resolve
from rnnexp.config.schema import RESUME_KEYS
from rnnexp.errors import UserError
from rnnexp.tracking.comparison import JOB_TAG
from rnnexp.tracking.describe import DEFAULT_NAME, readable_name
from rnnexp.tracking.lifecycle import get_run
from rnnexp.tracking.logger import OVERRIDES_TAG
from rnnexp.tracking.session import train
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.tracking.sweep import ARGS_TAG, FAILED_DIR, PARENT_FILE, STOP_FILE, SWEEP_ENV, request_stop
from rnnexp.training.loop import StopSignals

log = logging.getLogger(__name__)

# What a failed sweep job reports to the sweeper: finite, so that one diverging trial of an
# Optuna study does not end the study, and far worse than any real loss.
FAILED_JOB_LOSS = 1e9
KEY_TAG = "sweep_key"  # a job's swept overrides: how a resumed sweep finds the job's run
STOP_POLL_S = 0.5


@dataclass
class SweepJob:
    """What a job of a multirun knows about its sweep."""

    parent_run_id: str
    number: int
    overrides: list[str]  # all of the job's overrides
    swept: list[str]  # those the sweep chose, for this job's name
    parallel_jobs: int  # jobs the launcher runs at once on this machine (1: one after another)
    sweep_dir: Path
    resuming: bool = False  # the sweep is resume=<parent>: this job's run may exist already

    @property
    def name(self) -> str:
        """The swept values in the parent's style (`h50` in `sweep h50,100`); `job <n>` where none names it."""
        name = readable_name(self.swept, None) if self.swept else DEFAULT_NAME
        return f"job {self.number}" if name == DEFAULT_NAME else name


def run_job(cfg: DictConfig) -> float:
    """Train this multirun job as a child of the sweep's parent; return its best validation loss, or
    FAILED_JOB_LOSS for a job that failed, was interrupted, or did not start because the sweep stopped."""
    job = current_job()
    if cfg.blas_threads is None and job.parallel_jobs > 1:
        cfg.blas_threads = 1  # joblib workers share the cores: one BLAS thread each, no oversubscription
    tags = {JOB_TAG: str(job.number), OVERRIDES_TAG: " ".join(job.overrides), KEY_TAG: " ".join(job.swept)}
    stop = StopSignals()
    watching = watch_stop(job, stop)
    try:
        if stopping(job):  # the sweep was interrupted before this job started: resume= runs it
            return FAILED_JOB_LOSS
        clear_failure(job)
        client = connect(resolve_tracking_uri(cfg.tracking_uri), writing=True)
        previous = job_run(client, job) if job.resuming else None
        if previous is not None and previous.info.status == "FINISHED":
            log.info("job %d (%s) finished in run %s already", job.number, job.name, previous.info.run_id)
            return best_loss(client, previous)
        run_cfg = resolve(cfg)  # a bad value fails this job only (its failure is recorded below)
        run_cfg.resume = previous.info.run_id if previous is not None else None  # not the sweep's parent
        return train(run_cfg, parent_run_id=job.parent_run_id, run_name=job.name, tags=tags, stop=stop, client=client)
    except UserError as err:  # the run is FAILED with the reason; the sweep goes on with its other jobs
        print(f"error: job {job.number} ({job.name}): {err}", file=sys.stderr)
        record_failure(job, str(err))
        return FAILED_JOB_LOSS
    except KeyboardInterrupt as err:  # the run is KILLED with a checkpoint; the whole sweep stops
        print(f"interrupted: job {job.number} ({job.name}): {err}", file=sys.stderr)
        if not stopping(job):
            request_stop(job.sweep_dir, f"job {job.number} ({job.name}) was interrupted")
        return FAILED_JOB_LOSS
    finally:
        watching.set()


def resume(cfg: DictConfig) -> float:
    """`resume=<run id>`: continue that run; `resume=<sweep parent id>`: launch its sweep again (this
    process becomes that multirun), which runs the unfinished jobs and compares them."""
    overrides = HydraConfig.get().overrides
    reject_overrides_on_resume(list(overrides.task))
    client = connect(resolve_tracking_uri(cfg.tracking_uri), writing=True)
    parent = sweep_parent(client, str(cfg.resume))
    if parent is not None:
        command = resume_command(parent, overrides)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, command)
    return train(resolve(cfg), client=client)


def reject_overrides_on_resume(overrides: list[str]) -> None:
    """A resumed run continues with its saved config; a changed value would silently be ignored."""
    changed = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RESUME_KEYS]
    if changed:
        raise UserError(
            f"resume continues the run with its saved config, so {' '.join(changed)} would be ignored: "
            "drop those overrides, or start a new run."
        )


def current_job() -> SweepJob:
    """The job of a multirun this process runs, bound to its sweep's parent run."""
    hydra = HydraConfig.get()
    parent_file = Path(hydra.sweep.dir) / PARENT_FILE
    if SWEEP_ENV in os.environ:
        info = json.loads(os.environ[SWEEP_ENV])
    elif parent_file.is_file():  # a launcher that does not hand its environment to the jobs
        info = json.loads(parent_file.read_text())
    else:
        raise UserError(
            f"{parent_file} is missing: run sweeps with conf/config.yaml's hydra.callbacks.mlflow_sweep enabled."
        )
    overrides = [o for o in hydra.overrides.task if o.split("=", 1)[0].lstrip("+~") != "resume"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = [str(o.input_line) for o in parsed if o.key_or_group not in info["common_keys"]]
    n_jobs = hydra.launcher.get("n_jobs", 1)  # joblib's convention: -1 all cores, -2 all but one
    parallel = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return SweepJob(
        info["parent_run_id"],
        hydra.job.num,
        overrides,
        swept,
        parallel,
        Path(hydra.sweep.dir),
        info.get("resuming", False),
    )


def stopping(job: SweepJob) -> bool:
    return (job.sweep_dir / STOP_FILE).exists()


def watch_stop(job: SweepJob, stop: StopSignals) -> threading.Event:
    """Until the returned event is set, turn a STOP file into a stop request, which the training loop
    answers after its current step by checkpointing and ending the run KILLED."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(STOP_POLL_S):
            if stopping(job):
                stop.requested = True
                return

    threading.Thread(target=watch, name="sweep-stop", daemon=True).start()
    return done


def job_run(client: MlflowClient, job: SweepJob) -> Run | None:
    """The run this job had in an earlier launch of the sweep (a resumed sweep), or None."""
    parent = client.get_run(job.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{job.parent_run_id}'")
    key = " ".join(job.swept)
    matching = [run for run in children if run.data.tags.get(KEY_TAG) == key]
    finished = [run for run in matching if run.info.status == "FINISHED"]
    candidates = finished or sorted(matching, key=lambda run: run.info.start_time)
    return candidates[-1] if candidates else None


def best_loss(client: MlflowClient, run: Run) -> float:
    """What a finished job returns to the sweeper when a resumed sweep skips it."""
    return min((m.value for m in client.get_metric_history(run.info.run_id, "val_loss")), default=math.inf)


def sweep_parent(client: MlflowClient, resume: str) -> Run | None:
    """The sweep parent run that `resume=` names, or None for a single run or a checkpoint."""
    if resume.endswith(".npz"):
        return None
    run = get_run(client, resume)
    return run if run.data.tags.get("sweep") == "true" else None


def resume_command(parent: Run, overrides: Any) -> list[str]:
    """The command line that launches the parent's sweep again: its overrides, this command's
    (resume=, tracking_uri=, hydra.*), and its sweep directory where it still exists."""
    if ARGS_TAG not in parent.data.tags:
        raise UserError(
            f"sweep {parent.info.run_id} was started by an older rnnexp that did not record its command "
            "line: start it again as a new sweep."
        )
    started = json.loads(parent.data.tags[ARGS_TAG])

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    now_task, now_hydra = list(overrides.task), list(overrides.hydra)
    given = {key(o) for o in now_task}
    task = [o for o in started["task"] if key(o) not in given] + now_task
    hydra = [o for o in started["hydra"] if key(o) != "hydra.sweep.dir"]
    sweep_dir = parent.data.tags.get("sweep_dir")
    if sweep_dir and Path(sweep_dir).is_dir():
        hydra.append(f"hydra.sweep.dir={sweep_dir}")
    hydra += [o for o in now_hydra if key(o) not in ("hydra.run.dir", "hydra.mode")]
    return [sys.executable, "-m", "rnnexp.run", "--multirun", *task, *hydra]


def clear_failure(job: SweepJob) -> None:
    """A job that runs again is no longer the failure an earlier launch recorded."""
    (job.sweep_dir / FAILED_DIR / f"{job.number}.txt").unlink(missing_ok=True)


def record_failure(job: SweepJob, reason: str) -> None:
    """Keep a failed job's reason in the sweep directory, so the comparison counts it even when
    the job failed before its MLflow run existed (an impossible config value)."""
    folder = job.sweep_dir / FAILED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job.number}.txt").write_text(f"{job.name}: {reason}")
