"""The runner's side of the reproduction: its composed configs, and training runs it executes.

Claims take their data and model from the runner's `experiment=tutorial*` overlays, composed from
the project's conf/ exactly as `python -m rnnexp.run` composes them, and training is the runner's
command itself, run as a subprocess and read back from MLflow.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose
from mlflow import MlflowClient

from rnnexp import config, tracking
from rnnexp.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def runner_overrides(experiment: str, dataset_path: str | None, extra: list[str]) -> list[str]:
    path = [] if dataset_path is None else [f"dataset.path={dataset_path}"]
    return [f"experiment={experiment}", *path, *extra]


def runner_config(overrides: list[str]) -> config.RunConfig:
    """What `python -m rnnexp.run <overrides>` would train, checked (call inside a Hydra app)."""
    search_path = f"hydra.searchpath=['file://{PROJECT_ROOT / 'conf'}']"
    return config.resolve(compose(config_name="runner", overrides=[search_path, *overrides]))


def command_line(module: str, overrides: list[str]) -> str:
    """The command as one types it in a shell (arguments with brackets or quotes quoted)."""
    return shlex.join(["python", "-m", module, *overrides])


def train(
    client: MlflowClient,
    experiment_name: str,
    run_name: str | None,
    overrides: list[str],
    tracking_uri: str,
    parent_run_id: str,
) -> str:
    """Run `python -m rnnexp.run <overrides>` (its output goes to the terminal); return its MLflow run id,
    tagged as a child of the reproduction's run."""
    started_ms = int(time.time() * 1000)
    command = [sys.executable, "-m", "rnnexp.run", *overrides, f"tracking_uri={tracking_uri}"]
    if subprocess.run(command, cwd=PROJECT_ROOT).returncode != 0:
        raise UserError(f"the training run failed ({command_line('rnnexp.run', overrides)}): see its error above.")
    name_filter = f" and attributes.run_name = '{run_name}'" if run_name else ""
    runs = client.search_runs(
        [tracking.experiment_id(client, experiment_name)],
        filter_string=f"attributes.start_time >= {started_ms}{name_filter}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise UserError(
            f"the training run finished but is not in {tracking_uri}: check tracking_uri and MLFLOW_TRACKING_URI."
        )
    client.set_tag(runs[0].info.run_id, "mlflow.parentRunId", parent_run_id)
    return runs[0].info.run_id


def epoch_seconds(client: MlflowClient, run_id: str) -> list[float]:
    """Wall seconds between the run's consecutive end-of-epoch evaluations (training plus evaluation)."""
    stamps = sorted((m.step, m.timestamp) for m in client.get_metric_history(run_id, "epoch"))
    return [(after - before) / 1000 for (_, before), (_, after) in zip(stamps, stamps[1:])]
