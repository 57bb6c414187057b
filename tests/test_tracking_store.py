"""Where runs are logged: the store's address, its reachability, and resumed runs' metric steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_setup import free_port, mlflow_server
from mlflow import MlflowClient
from runner_setup import TINY, compose_run, store

from rnnexp import tracking
from rnnexp.errors import UserError
from rnnexp.tracking import train


def test_the_default_store_is_an_absolute_sqlite_file_in_the_launch_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///runs/x.db") == f"sqlite:///{tmp_path}/runs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert tracking.resolve_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns"])
def test_the_retired_file_store_is_refused_with_the_alternative(uri: str) -> None:
    with pytest.raises(UserError, match="file store.*use sqlite:///mlflow.db"):
        tracking.resolve_tracking_uri(uri)


def test_an_unreachable_server_is_reported_before_training(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    cfg = compose_run(tmp_path, f"tracking_uri={uri}")
    started = time.monotonic()
    with pytest.raises(UserError, match=f"cannot reach the MLflow tracking server at {uri}"):
        train(cfg)
    assert time.monotonic() - started < 5


def test_a_reopened_run_skips_the_steps_the_store_holds(tmp_path: Path) -> None:
    store(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = tracking.create_run(client, "reopen", None, None, {})
    run.log_metrics({"loss": 3.0, "lr": 0.1}, step=1)
    run.log_metrics({"loss": 2.0}, step=2)
    run.flush()
    again = tracking.reopen_run(client, run.run_id)
    for step, loss in [(1, 3.0), (2, 2.0), (3, 1.0)]:  # a resumed run recomputes steps 1 and 2
        again.log_metrics({"loss": loss, "lr": 0.1}, step)
    again.end("FINISHED")
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "lr")] == [(1, 0.1), (2, 0.1), (3, 0.1)]
    assert client.get_run(run.run_id).info.status == "FINISHED"


@pytest.fixture
def served_uri(tmp_path: Path) -> Iterator[str]:
    """An `mlflow server` on 127.0.0.1 and a free port, with its own sqlite store; stopped after the test."""
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "served") as server:
        yield server.uri


@pytest.mark.slow
def test_a_run_logs_to_an_mlflow_server(tmp_path: Path, served_uri: str) -> None:
    train(compose_run(tmp_path, *TINY, f"tracking_uri={served_uri}", "experiment_name=served"))
    client = MlflowClient(served_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.hidden_dim"] == "8"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 20]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "vocab.json", "checkpoints"}
