"""A checkpoint is bound to its run: resume refuses another run's, and says so when there is none."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from runner_setup import client, compose_run, metric_histories, run_cli, store

from rnnexp.errors import UserError
from rnnexp.tracking import train
from rnnexp.training import checkpoint

SETUP = ["experiment_name=binding"]


def killed_run(tmp_path: Path, *overrides: str) -> str:
    """A trained run left KILLED, as a kill after its last checkpoint leaves it: resume= accepts it."""
    train(compose_run(tmp_path, *SETUP, *overrides))
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("binding").experiment_id], "", max_results=1)
    mlflow.set_terminated(run.info.run_id, "KILLED")
    return run.info.run_id


def run_by_config(tmp_path: Path, **params: str) -> str:
    mlflow = client(tmp_path)
    experiment = mlflow.get_experiment_by_name("binding").experiment_id
    query = " and ".join(f"params.`{key}` = '{value}'" for key, value in params.items())
    (run,) = mlflow.search_runs([experiment], query)
    return run.info.run_id


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[str, str]:
    """Run A (8 hidden units, seed 10) and run B (6 units, seed 5), both killed; B's checkpoints over A's."""
    killed_run(tmp_path)
    killed_run(tmp_path, "model.hidden_dim=6", "seed=5")
    a = run_by_config(tmp_path, **{"model.hidden_dim": "8"})
    b = run_by_config(tmp_path, **{"model.hidden_dim": "6"})
    for name in ("last.npz", "best.npz"):
        shutil.copy(tmp_path / "checkpoints" / b / name, tmp_path / "checkpoints" / a / name)
    return a, b


def test_a_foreign_checkpoint_is_refused_naming_both_runs_and_nothing_is_written(
    tmp_path: Path, two_runs: tuple[str, str]
) -> None:
    a, b = two_runs
    mlflow = client(tmp_path)
    before = (mlflow.get_run(a).info.status, metric_histories(mlflow, a), mlflow.get_run(a).data.tags)
    last = tmp_path / "checkpoints" / a / "last.npz"
    stamp = last.read_bytes()
    with pytest.raises(UserError) as refused:
        train(compose_run(tmp_path, *SETUP, f"resume={a}"))
    message = str(refused.value)
    assert f"belongs to run {b}, not {a}" in message
    assert "config digest" in message and "W 6×6 vs 8×8" in message
    after = (mlflow.get_run(a).info.status, metric_histories(mlflow, a), mlflow.get_run(a).data.tags)
    assert after == before and before[0] == "KILLED"
    assert last.read_bytes() == stamp  # not rewritten to run A's id

    done = run_cli(tmp_path, f"resume={a}", *store(tmp_path))  # the entry point: one line, exit 2
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {message}"]
    assert mlflow.get_run(a).info.status == "KILLED"


def test_a_checkpoint_of_the_same_run_with_a_changed_config_or_data_is_refused(tmp_path: Path) -> None:
    run_id = killed_run(tmp_path)
    last = tmp_path / "checkpoints" / run_id / "last.npz"
    saved = checkpoint.load(last)
    saved.meta["config"]["optim"]["lr"] = 3.0  # the same run id and shapes, another config
    saved.meta["data_digest"] = "0" * 64
    checkpoint.save(last, saved)
    with pytest.raises(
        UserError, match=r"its config digest \w{12} differs from the run's \w{12}; its data digest 0{12}"
    ):
        train(compose_run(tmp_path, *SETUP, f"resume={run_id}"))
    assert client(tmp_path).get_run(run_id).info.status == "KILLED"


def test_a_run_whose_checkpoints_are_gone_restarts_with_a_warning(tmp_path: Path, caplog) -> None:
    run_id = killed_run(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / run_id)
    mlflow = client(tmp_path)
    for artifact in mlflow.list_artifacts(run_id, "checkpoints"):
        Path(mlflow.get_run(run_id).info.artifact_uri.removeprefix("file://"), artifact.path).unlink()
    with caplog.at_level(logging.WARNING):
        train(compose_run(tmp_path, *SETUP, f"resume={run_id}"))
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING and "no checkpoint" in r.getMessage()]
    assert "restarts from step 0" in warning.getMessage() and run_id in warning.getMessage()
    assert mlflow.get_run(run_id).info.status == "FINISHED"
