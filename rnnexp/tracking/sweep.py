"""Hydra multiruns as MLflow sweeps: one parent run, a child per job, a comparison at the end.

The launching process creates the store, the experiment and the parent run before any job starts
(concurrent creation of a fresh sqlite store fails), and writes the parent's id into the sweep
directory, where every job finds it whichever launcher ran it (joblib worker, SLURM node).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow import MlflowClient
from omegaconf import DictConfig

from rnnexp import cli
from rnnexp.tracking.comparison import JOB_TAG, summarise
from rnnexp.tracking.logger import OVERRIDES_TAG, RunLogger, create_run
from rnnexp.tracking.params import environment_tags
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.errors import UserError

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
FAILED_DIR = "failed_jobs"  # a job that fails before its MLflow run exists leaves its reason here


@dataclass
class SweepJob:
    """What a job of a multirun knows about its sweep."""

    parent_run_id: str
    number: int
    overrides: list[str]  # all of the job's overrides
    swept: list[str]  # those the sweep chose, for this job's name
    parallel_jobs: int  # jobs the launcher runs at once on this machine (1: one after another)
    sweep_dir: Path

    @property
    def name(self) -> str:
        return " ".join(self.swept) or f"job {self.number}"


def current_job() -> SweepJob | None:
    """The sweep this process runs a job of, or None outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    parent_file = Path(hydra.sweep.dir) / PARENT_FILE
    if not parent_file.is_file():
        raise UserError(
            f"{parent_file} is missing: run sweeps with conf/config.yaml's hydra.callbacks.mlflow_sweep enabled.")
    info = json.loads(parent_file.read_text())
    overrides = list(hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = [o.input_line for o in parsed if o.key_or_group not in info["common_keys"]]
    n_jobs = hydra.launcher.get("n_jobs", 1)  # joblib's convention: -1 all cores, -2 all but one
    parallel = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return SweepJob(info["parent_run_id"], hydra.job.num, overrides, swept, parallel, Path(hydra.sweep.dir))


def record_failure(job: SweepJob, reason: str) -> None:
    """Keep a failed job's reason in the sweep directory, so the comparison counts it even when
    the job failed before its MLflow run existed (an impossible config value)."""
    folder = job.sweep_dir / FAILED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job.number}.txt").write_text(f"{job.name}: {reason}")


class SweepCallback(Callback):
    """Opens the parent run when a multirun starts; compares the children when it ends.

    Hydra turns a callback's exceptions into warnings and carries on, so a UserError here ends
    the process itself (one line, exit status 2): before any job when the store is unreachable,
    after the comparison when jobs failed.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._open_parent(config)
        except UserError as err:
            cli.exit_with(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._compare_children()
        except UserError as err:
            cli.exit_with(err)

    def _open_parent(self, config: DictConfig) -> None:
        self.client = connect(resolve_tracking_uri(config.tracking_uri))
        sweep = " ".join(config.hydra.overrides.task)
        parent = create_run(self.client, config.experiment_name, f"sweep {sweep}".strip(), None,
                                     {"sweep": "true", OVERRIDES_TAG: sweep, **environment_tags()})
        self.parent_run_id = parent.run_id
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.sweep_dir = sweep_dir
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
        common = sorted({o.key_or_group for o in overrides} - swept)  # what every job shares
        (sweep_dir / PARENT_FILE).write_text(json.dumps({"parent_run_id": parent.run_id, "common_keys": common}))
        parent.set_tags({"sweep_dir": str(sweep_dir.resolve())})
        log.info("sweep: MLflow parent run %s in %s", parent.run_id, self.client.tracking_uri)

    def _compare_children(self) -> None:
        parent = RunLogger(self.client, self.parent_run_id)
        children = summarise(self.client, parent)
        failed = [run.info.run_name for run in children if run.info.status != "FINISHED"]
        with_runs = {run.data.tags.get(JOB_TAG) for run in children}
        failures = sorted((Path(self.sweep_dir) / FAILED_DIR).glob("*.txt"))
        failed += [path.read_text() for path in failures if path.stem not in with_runs]  # no run to show
        jobs = len(with_runs | {path.stem for path in failures})
        parent.end("FINISHED" if len(failed) < jobs else "FAILED", f"{len(failed)} of {jobs} jobs failed" if failed else None)
        if failed:
            raise UserError(f"{len(failed)} of {jobs} sweep jobs failed ({'; '.join(failed)}): "
                            f"see the failure column of the table above, or parent run {self.parent_run_id} in MLflow.")
