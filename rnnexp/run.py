"""`python -m rnnexp.run [overrides]`: train one run, or with `-m` one job of a sweep.

    python -m rnnexp.run                          # the default experiment
    python -m rnnexp.run hidden_dim=50,100 -m     # a sweep: one MLflow parent run, a child per job
    python -m rnnexp.run resume=<run id>          # continue a killed run where its checkpoint left it
    python -m rnnexp.run resume=<sweep parent id> # finish a sweep: its unfinished jobs, then the comparison

Returns the best validation loss, which Hydra's Optuna sweeper minimises.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnnexp import cli
from rnnexp import config as _schemas  # noqa: F401  (registers the schemas conf/ names, before Hydra composes)
from rnnexp.config.resolve import resolve
from rnnexp.config.schema import RESUME_KEYS
from rnnexp.errors import UserError

log = logging.getLogger(__name__)

# What a failed sweep job reports to the sweeper: finite, so that one diverging trial of an
# Optuna study does not end the study, and far worse than any real loss.
FAILED_JOB_LOSS = 1e9
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@cli.reports_user_errors
def main(cfg: DictConfig) -> float:
    if HydraConfig.get().mode != RunMode.MULTIRUN and not cfg.resume:
        resolve(cfg)  # a bad value answers before MLflow loads (a sweep job's becomes its FAILED run instead)
    # MLflow and the trainer load here, not at import: --help, --cfg and a mistyped override answer at once
    from rnnexp.tracking import sweep
    from rnnexp.tracking.logger import OVERRIDES_TAG
    from rnnexp.tracking.session import train
    from rnnexp.tracking.store import connect, resolve_tracking_uri
    from rnnexp.training.loop import StopSignals

    job = sweep.current_job()
    if job is None:
        if cfg.resume:
            reject_overrides_on_resume(HydraConfig.get().overrides.task)
            parent = sweep.sweep_parent(cfg)
            if parent is not None:  # finish the sweep: the same multirun again, bound to its parent
                command = sweep.resume_command(parent, HydraConfig.get().overrides)
                sys.stdout.flush()
                sys.stderr.flush()
                os.execv(sys.executable, command)
        return train(cfg)
    if cfg.blas_threads is None and job.parallel_jobs > 1:
        cfg.blas_threads = 1  # joblib workers share the cores: one BLAS thread each, no oversubscription
    tags = {sweep.JOB_TAG: str(job.number), OVERRIDES_TAG: " ".join(job.overrides), sweep.KEY_TAG: " ".join(job.swept)}
    stop = StopSignals()
    watching = sweep.watch_stop(job, stop)
    try:
        if sweep.stopping(job):  # the sweep was interrupted before this job started: resume= runs it
            return FAILED_JOB_LOSS
        sweep.clear_failure(job)
        if job.resuming:
            cfg.resume = None
            previous = sweep.job_run(connect(resolve_tracking_uri(cfg.tracking_uri)), job)
            if previous is not None and previous.info.status == "FINISHED":
                log.info("job %d (%s) finished in run %s already", job.number, job.name, previous.info.run_id)
                return sweep.best_loss(connect(resolve_tracking_uri(cfg.tracking_uri)), previous)
            if previous is not None:
                cfg.resume = previous.info.run_id
        return train(cfg, parent_run_id=job.parent_run_id, run_name=job.name, tags=tags, stop=stop)
    except UserError as err:  # the run is FAILED with the reason; the sweep goes on with its other jobs
        print(f"error: job {job.number} ({job.name}): {err}", file=sys.stderr)
        sweep.record_failure(job, str(err))
        return FAILED_JOB_LOSS
    except KeyboardInterrupt as err:  # the run is KILLED with a checkpoint; the whole sweep stops
        print(f"interrupted: job {job.number} ({job.name}): {err}", file=sys.stderr)
        if not sweep.stopping(job):
            sweep.request_stop(job.sweep_dir, f"job {job.number} ({job.name}) was interrupted")
        return FAILED_JOB_LOSS
    finally:
        watching.set()


def reject_overrides_on_resume(overrides: list[str]) -> None:
    """A resumed run continues with its saved config; a changed value would silently be ignored."""
    changed = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RESUME_KEYS]
    if changed:
        raise UserError(
            f"resume continues the run with its saved config, so {' '.join(changed)} would be ignored: "
            "drop those overrides, or start a new run."
        )


def entry() -> None:
    """`cli.guard(main)`, and one sentence for what Hydra itself trips on before any of ours runs."""
    try:
        cli.guard(main)
    except OSError as err:  # Hydra creates the run's output folder (outputs/...) first; the task's own are cli's
        if err.errno not in UNWRITABLE:
            raise
        folder = os.path.abspath(err.filename or "outputs")
        cli.exit_with(
            UserError(
                f"cannot write {folder} ({err.strerror}): run from a writable folder, or set "
                "hydra.run.dir (hydra.sweep.dir for a sweep) to one."
            )
        )
    except ValueError as err:  # Hydra's own check of its flags, e.g. --cfg job with -m
        if "can be specified" not in str(err):
            raise
        cli.exit_with(UserError(f"{err}: give one of them per command (--cfg job shows one run's config)."))


if __name__ == "__main__":
    entry()
