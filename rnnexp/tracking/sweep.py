"""Hydra multiruns as MLflow sweeps: one parent run, a child per job, a comparison at the end.

The launching process creates the store, the experiment and the parent run before any job starts
(concurrent creation of a fresh sqlite store fails), and writes the parent's id into the sweep
directory, where every job finds it whichever launcher ran it (joblib worker, SLURM node).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from rnnexp import cli
from rnnexp.tracking.figures import validation_curves
from rnnexp.tracking.logger import FAILURE_TAG, OVERRIDES_TAG, RunLogger, create_run
from rnnexp.tracking.params import environment_tags
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.tracking.tables import csv_table, markdown_table
from rnnexp.errors import UserError

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
FAILED_DIR = "failed_jobs"  # a job that fails before its MLflow run exists leaves its reason here
JOB_TAG = "sweep_job"


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
        experiment = self.client.get_run(self.parent_run_id).info.experiment_id
        children = self.client.search_runs([experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_run_id}'")
        children.sort(key=lambda run: int(run.data.tags.get(JOB_TAG, 0)))
        curves = {run.info.run_id: self.client.get_metric_history(run.info.run_id, "val_ppl") for run in children}
        header, rows = comparison(children, {run_id: [m.value for m in history] for run_id, history in curves.items()})
        table = markdown_table(header, rows)
        print(f"\nsweep {self.parent_run_id}: {len(children)} runs\n{table}")
        parent.log_text(table, "comparison.md")
        parent.log_text(csv_table(header, rows), "comparison.csv")
        parent.log_figure(validation_curves(children, curves), "val_curves.png")
        failed = [run.info.run_name for run in children if run.info.status != "FINISHED"]
        with_runs = {run.data.tags.get(JOB_TAG) for run in children}
        failures = sorted((Path(self.sweep_dir) / FAILED_DIR).glob("*.txt"))
        failed += [path.read_text() for path in failures if path.stem not in with_runs]  # no run to show
        jobs = len(with_runs | {path.stem for path in failures})
        parent.end("FINISHED" if len(failed) < jobs else "FAILED", f"{len(failed)} of {jobs} jobs failed" if failed else None)
        if failed:
            raise UserError(f"{len(failed)} of {jobs} sweep jobs failed ({'; '.join(failed)}): "
                            f"see the failure column of the table above, or parent run {self.parent_run_id} in MLflow.")


def swept_values(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, str]]]:
    """The override keys whose values differ between runs, and each run's values."""
    values = [dict(o.split("=", 1) for o in run.data.tags.get(OVERRIDES_TAG, "").split() if "=" in o)
              for run in runs]
    keys = sorted({key for v in values for key in v})
    return [key for key in keys if len({v.get(key) for v in values}) > 1], values


def comparison(runs: Sequence[Run], val_ppl: dict[str, list[float]]) -> tuple[list[str], list[list[str]]]:
    """One row per run: its swept values, status, best validation and test perplexity, tokens/s."""
    keys, values = swept_values(runs)
    header = ["job", *keys, "status", "best val ppl", "test ppl", "tokens/s", "run id", "failure"]
    rows = []
    for run, swept in zip(runs, values):
        metrics = run.data.metrics
        best = min(val_ppl[run.info.run_id], default=math.nan)
        rows.append([
            run.data.tags.get(JOB_TAG, "?"),
            *(swept.get(key, "") for key in keys),
            run.info.status,
            f"{best:.3f}",
            f"{metrics['test_ppl']:.3f}" if "test_ppl" in metrics else "",
            f"{metrics['tokens_per_sec']:.0f}" if "tokens_per_sec" in metrics else "",
            run.info.run_id,
            run.data.tags.get(FAILURE_TAG, ""),
        ])
    return header, rows
