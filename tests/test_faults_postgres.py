"""Team mode on a real database: an `mlflow server` on PostgreSQL 15, a parallel sweep and a run beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from faults_setup import mlflow_server, postgres, postgres_missing
from mlflow import MlflowClient
from runner_setup import TINY, command

from rnnexp.tracking.store import resolve_tracking_uri

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def launch(folder: Path, *args: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        command(folder, *TINY, f"train.checkpoint_dir={folder}/checkpoints", *args),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_parallel_sweep_and_runs_beside_it_lose_nothing_on_postgresql(tmp_path: Path) -> None:
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    with postgres() as database, mlflow_server(database, tmp_path / "artifacts", workers=2) as server:
        direct = database.replace("postgresql+psycopg://", "postgresql://")  # as a user would type it
        assert resolve_tracking_uri(direct) == database
        processes = [
            launch(
                tmp_path / "sweep",
                f"tracking_uri={server.uri}",
                "model.hidden_dim=8,12,16,20",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "-m",
            ),
            launch(tmp_path / "single", f"tracking_uri={server.uri}", "model.hidden_dim=10", "experiment_name=single"),
            launch(tmp_path / "direct", f"tracking_uri={direct}", "model.hidden_dim=6", "experiment_name=direct"),
        ]
        errors = [process.communicate(timeout=900)[1] for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0], "\n".join(errors)

        client = server.client()
        runs = client.search_runs([client.get_experiment_by_name("rnnexp").experiment_id])
        (parent,) = [run for run in runs if run.data.tags.get("sweep") == "true"]
        children = [run for run in runs if run is not parent]
        assert parent.info.status == "FINISHED"
        assert sorted(run.data.params["model.hidden_dim"] for run in children) == ["12", "16", "20", "8"]
        assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
        for run in children:
            assert run.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 20]
        assert {"comparison.md", "comparison.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

        (single,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])
        assert single.info.status == "FINISHED" and "test_ppl" in single.data.metrics
        (on_database,) = MlflowClient(database).search_runs([client.get_experiment_by_name("direct").experiment_id])
        assert on_database.info.status == "FINISHED" and on_database.data.params["model.hidden_dim"] == "6"
