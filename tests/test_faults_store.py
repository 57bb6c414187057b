"""Any number of first users of a new store, runs and sweeps, from one folder or several: none lost.

MLflow creates and upgrades a new database's tables in steps that are not one transaction; before
the store's lock, two first users at once crashed one of them or left the store half-migrated.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.store.db.utils import _get_latest_schema_revision
from runner_setup import TINY

pytestmark = pytest.mark.faults

USERS, TRIALS = 8, 5
FIRST_USER = """
import sys
from rnnexp.tracking.lifecycle import create_run
from rnnexp.tracking.store import connect
run = create_run(connect(sys.argv[1]), "race", f"user {sys.argv[2]}", None, {})
run.log_metrics({"loss": float(sys.argv[2])}, step=1)
run.end("FINISHED")
"""


def migration_state(db: Path) -> tuple[list[str], str]:
    with sqlite3.connect(db) as connection:
        leftovers = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'"
            )
        ]
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return leftovers, version


def test_concurrent_first_users_of_a_new_store_lose_nothing(tmp_path: Path) -> None:
    lost = 0
    for trial in range(TRIALS):
        db = tmp_path / f"trial{trial}" / "mlflow.db"
        folders = [tmp_path / f"trial{trial}" / name for name in ("here", "there")]
        for folder in folders:
            folder.mkdir(parents=True)
        users = [
            subprocess.Popen(
                [sys.executable, "-c", FIRST_USER, f"sqlite:///{db}", str(user)],
                cwd=folders[user % 2],
                stderr=subprocess.PIPE,
                text=True,
            )
            for user in range(USERS)
        ]
        errors = [user.communicate(timeout=600)[1] for user in users]
        assert [user.returncode for user in users] == [0] * USERS, errors
        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
        lost += USERS - len(runs)
        assert sorted(run.data.metrics["loss"] for run in runs) == [float(user) for user in range(USERS)]
        assert {run.info.status for run in runs} == {"FINISHED"}
        assert migration_state(db) == ([], _get_latest_schema_revision())
    print(f"{USERS} concurrent first users x {TRIALS} trials: {lost} lost, 0 half-migrated")


def test_runs_and_sweeps_started_together_on_a_new_store_each_keep_their_own(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    common = [*TINY, f"tracking_uri=sqlite:///{db}", f"train.checkpoint_dir={tmp_path}/checkpoints"]

    def launch(folder: Path, *args: str) -> subprocess.Popen:
        flags = [arg for arg in args if arg.startswith("-")]
        overrides = [arg for arg in args if not arg.startswith("-")]
        return subprocess.Popen(
            [sys.executable, "-m", "rnnexp.run", *flags, *common, *overrides],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Two sweeps from one folder in the same second: the default sweep folder with its time pinned.
    same_second = "hydra.sweep.dir=multirun/2026-01-01/12-00-00-${sweep_id:}"
    processes = [
        launch(here, "-m", "model.hidden_dim=8,10", same_second),
        launch(here, "-m", "model.hidden_dim=12,14", same_second),
        launch(here, "model.hidden_dim=16"),
        launch(there, "model.hidden_dim=18"),
    ]
    errors = [process.communicate(timeout=900)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, "\n".join(errors)

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("rnnexp").experiment_id])
    assert len(runs) == 2 + 2 * 3 and {run.info.status for run in runs} == {"FINISHED"}
    parents = [run for run in runs if run.data.tags.get("sweep") == "true"]
    swept = {}
    for parent in parents:
        children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        swept[parent.data.tags["sweep_dir"]] = sorted(int(run.data.params["model.hidden_dim"]) for run in children)
    assert sorted(swept.values()) == [[8, 10], [12, 14]]
    folders = sorted((here / "multirun" / "2026-01-01").iterdir())
    assert sorted(map(str, folders)) == sorted(swept)  # one folder per sweep, even within one second
    singles = sorted(
        int(run.data.params["model.hidden_dim"])
        for run in runs
        if "mlflow.parentRunId" not in run.data.tags and run not in parents
    )
    assert singles == [16, 18]
    assert migration_state(db) == ([], _get_latest_schema_revision())
    print(f"sweep folders: {[folder.name for folder in folders]}")
