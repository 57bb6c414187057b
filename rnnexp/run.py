"""`python -m rnnexp.run [overrides]`: train one run, or with `-m` one job of a sweep.

    python -m rnnexp.run                              # the default experiment
    python -m rnnexp.run model.hidden_dim=50,100 -m   # a sweep: one MLflow parent run, a child per job
    python -m rnnexp.run resume=<run id>              # continue a killed run where its checkpoint left it
    python -m rnnexp.run resume=<sweep parent id>     # finish a sweep: its unfinished jobs, then the comparison

Returns the best validation loss, which Hydra's Optuna sweeper minimises.
"""

from __future__ import annotations

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnnexp import cli
from rnnexp import config as _schemas  # noqa: F401  (registers the schemas conf/ names, before Hydra composes)
from rnnexp.config.resolve import resolve
from rnnexp.errors import UserError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@cli.reports_user_errors
def main(cfg: DictConfig) -> float:
    # MLflow and the trainer load in each branch, not at import: --help, --cfg and a mistyped override answer at once
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from rnnexp.tracking.jobs import run_job

        return run_job(cfg)  # a bad value becomes the job's FAILED run, and the sweep goes on
    if cfg.resume:
        from rnnexp.tracking.jobs import resume

        return resume(cfg)
    run_cfg = resolve(cfg)  # a bad value answers before MLflow loads
    from rnnexp.tracking.session import train

    return train(run_cfg)


def entry() -> None:
    """`cli.guard(main)`, and one sentence for what Hydra itself trips on before any of ours runs."""
    try:
        cli.guard(main)
    except OSError as err:  # Hydra creates the run's output folder (outputs/...) first; the task's own are cli's
        if err.errno not in cli.FILE_FAULTS:
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
