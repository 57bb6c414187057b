"""The fault handling's parts, fast: what the fault-injection suite (`pytest -m faults`) drives end to end.

A full disk is /dev/full behind the checkpoint's temporary file; a dead process is one that ran
and was reaped; a server that is away is a closed loopback port; a damaged store is a new one
with the leftovers of two schema upgrades run at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf
from runner_setup import CONF_DIR, store

from rnnexp import repair
from rnnexp.errors import UserError
from rnnexp.tracking import jobs, lifecycle, logger, owner, sweep
from rnnexp.tracking import store as stores
from rnnexp.training import checkpoint


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_checkpoint(step: int) -> checkpoint.Checkpoint:
    return checkpoint.Checkpoint({"W": np.full((3, 3), step, np.float32)}, {}, {"progress": {"step": step}})


def test_a_full_disk_leaves_the_last_checkpoint_intact_and_no_partial_file(tmp_path: Path) -> None:
    last = tmp_path / "last.npz"
    checkpoint.save(last, small_checkpoint(3))
    (tmp_path / "last.npz.partial").symlink_to("/dev/full")  # every write to it fails with ENOSPC

    with pytest.raises(UserError) as raised:
        checkpoint.save(last, small_checkpoint(6))

    assert str(raised.value).startswith(f"cannot write the checkpoint {last} (No space left on device): free space")
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]
    assert checkpoint.load(last).meta["progress"]["step"] == 3


def test_a_checkpoint_folder_that_cannot_exist_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError) as refused:
        checkpoint.check_writable(tmp_path / "file" / "run")
    assert str(refused.value) == (
        f"cannot write the checkpoint {tmp_path}/file/run (Not a directory): {tmp_path}/file is a file, not a "
        "folder: move it, or set train.checkpoint_dir to another folder; the last good checkpoint is intact."
    )


def test_a_run_is_alive_while_its_process_runs(tmp_path: Path) -> None:
    store(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = lifecycle.create_run(client, "owners", None, None, {})
    mine = client.get_run(run.run_id)
    assert owner.is_alive(mine) and owner.owned_here(mine)

    client.set_tag(run.run_id, owner.PID_TAG, str(dead_pid()))
    assert not owner.is_alive(client.get_run(run.run_id))

    client.set_tag(run.run_id, owner.HOST_TAG, "another-host")  # only the heartbeat can tell
    beat = float(client.get_run(run.run_id).data.tags[owner.HEARTBEAT_TAG])
    assert owner.is_alive(client.get_run(run.run_id), now=beat + owner.STALE_AFTER_S - 1)
    assert not owner.is_alive(client.get_run(run.run_id), now=beat + owner.STALE_AFTER_S + 1)
    run.end("FINISHED")
    assert not owner.is_alive(client.get_run(run.run_id))


def test_a_live_run_is_not_reopened_and_a_reopened_one_loses_its_failure_reason(tmp_path: Path) -> None:
    store(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = lifecycle.create_run(client, "owners", None, None, {})
    run.end("KILLED", "interrupted")
    client.update_run(run.run_id, status="RUNNING")  # as if another process of this host held it
    client.set_tag(run.run_id, owner.PID_TAG, str(os.getppid()))
    client.set_tag(run.run_id, owner.PID_START_TAG, owner.process_start(os.getppid()))
    with pytest.raises(UserError, match=f"run {run.run_id} is still running \\(pid {os.getppid()} on host"):
        lifecycle.reopen_run(client, run.run_id)

    client.set_tag(run.run_id, owner.PID_TAG, str(dead_pid()))
    again = lifecycle.reopen_run(client, run.run_id)
    reopened = client.get_run(run.run_id)
    assert reopened.info.status == "RUNNING" and logger.FAILURE_TAG not in reopened.data.tags
    assert reopened.data.tags[owner.PID_TAG] == str(os.getpid())
    again.end("FINISHED")


def test_stale_runs_are_listed_and_marked_killed(tmp_path: Path) -> None:
    store(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    alive = lifecycle.create_run(client, "stale", "alive", None, {})
    lost = lifecycle.create_run(client, "stale", "lost", None, {})
    client.log_text(lost.run_id, "seed: 10\n", "config.yaml")  # it described itself before it was lost
    early = lifecycle.create_run(client, "stale", "killed early", None, {})  # lost before it logged its config
    for run in (lost, early):
        client.set_tag(run.run_id, owner.PID_TAG, str(dead_pid()))

    assert [run.info.run_id for run in repair.stale_runs(client)] == [lost.run_id, early.run_id]
    table = repair.describe_stale(client, repair.stale_runs(client)).splitlines()
    assert table[2].endswith(f"| resume={lost.run_id} |")
    assert table[3].endswith("| no: killed before it logged its config |")
    repair.mark_killed(client, repair.stale_runs(client))

    marked = client.get_run(lost.run_id)
    assert marked.info.status == "KILLED"
    assert marked.data.tags[logger.FAILURE_TAG].endswith(f"resume={lost.run_id} continues it")
    assert (
        client.get_run(early.run_id)
        .data.tags[logger.FAILURE_TAG]
        .endswith("it was killed before it logged its config, so it cannot be resumed: start it again")
    )
    assert client.get_run(alive.run_id).info.status == "RUNNING" and repair.stale_runs(client) == []
    with pytest.raises(UserError, match="is still running"):
        repair.chosen(client, [alive.run_id])
    alive.end("FINISHED")


def test_a_server_that_is_away_costs_seconds_and_one_warning_and_loses_nothing(caplog, monkeypatch) -> None:
    for name, value in stores.HTTP_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    run = logger.RunLogger(client, "0" * 32, flush_every_s=0.0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rnnexp.tracking.logger"):
        for step in range(1, 6):
            run.log_metrics({"train_loss": 1.0 / step}, step)
            run.log_text("text", "samples.txt")
    assert time.monotonic() - started < 10  # MLflow's defaults retry for minutes
    assert run.server_away
    assert run.pending() == [("train_loss", 1.0 / step, step) for step in range(1, 6)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stopped answering" in warnings[0] and "training goes on" in warnings[0]


def test_only_a_silent_server_counts_as_away() -> None:
    def raised(cause: BaseException) -> MlflowException:
        try:
            try:
                raise cause
            except Exception as err:
                raise MlflowException(f"API request failed with exception {err}")  # noqa: B904 - as MLflow does
        except MlflowException as outer:
            return outer

    assert stores.server_unreachable(raised(requests.ConnectionError("refused")))
    assert stores.server_unreachable(raised(requests.Timeout("slow")))
    assert not stores.server_unreachable(raised(ValueError("bad batch")))
    assert not stores.server_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST"))


def test_a_half_migrated_store_gets_one_line_and_a_repair_that_works(tmp_path: Path) -> None:
    store(tmp_path)
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:  # the leftovers of two first users upgrading at once
        (head,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        connection.execute("CREATE TABLE _alembic_tmp_latest_metrics (key VARCHAR(250))")
        connection.execute("UPDATE alembic_version SET version_num = '75868b020152'")
    uri = f"sqlite:///{db}"
    with pytest.raises(UserError) as raised:
        stores.connect(uri)
    assert str(raised.value) == (
        f"the MLflow store {uri} was left half-migrated by an interrupted schema upgrade (tables "
        f"_alembic_tmp_latest_metrics): back it up, then repair it with python -m rnnexp.repair action=repair_store "
        f"tracking_uri={uri}."
    )

    assert stores.repair_store(uri) == [
        "dropped _alembic_tmp_latest_metrics (a leftover copy of latest_metrics)",
        f"recorded schema version {head} (was 75868b020152): the tables were upgraded already",
    ]
    client = stores.connect(uri)
    assert client.get_experiment_by_name("Default") is not None
    assert stores.repair_store(uri) == []


def test_a_store_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(UserError, match="mlflow.db is not a readable sqlite database .*: restore it from a backup"):
        stores.connect(f"sqlite:///{tmp_path}/mlflow.db")


def test_each_launch_gets_its_own_sweep_folder() -> None:
    folders = []
    for _ in range(2):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", return_hydra_config=True)
            folders.append(str(cfg.hydra.sweep.dir))
            assert str(cfg.hydra.sweep.dir) == folders[-1]  # resolved once, cached for the jobs
    assert folders[0] != folders[1] and folders[0].rsplit("-", 1)[0].startswith("multirun/")


def test_a_resumed_sweep_launches_its_own_command_again(tmp_path: Path) -> None:
    store(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "sweep").mkdir()
    started = {
        "task": ["model.hidden_dim=8,16", "train.epochs=2", f"tracking_uri=sqlite:///{tmp_path}/mlflow.db"],
        "hydra": ["hydra/launcher=joblib", "hydra.sweep.dir=/elsewhere"],
    }
    parent = lifecycle.create_run(
        client,
        "sweeps",
        "sweep",
        None,
        {"sweep": "true", sweep.ARGS_TAG: __import__("json").dumps(started), "sweep_dir": str(tmp_path / "sweep")},
    )
    now = OmegaConf.create(
        {
            "task": [f"resume={parent.run_id}", "tracking_uri=sqlite:///moved.db"],
            "hydra": ["hydra.run.dir=/tmp/x", "hydra.launcher.n_jobs=2"],
        }
    )

    command = jobs.resume_command(client.get_run(parent.run_id), now)

    assert command == [
        sys.executable,
        "-m",
        "rnnexp.run",
        "--multirun",
        "model.hidden_dim=8,16",
        "train.epochs=2",
        f"resume={parent.run_id}",
        "tracking_uri=sqlite:///moved.db",
        "hydra/launcher=joblib",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.launcher.n_jobs=2",
    ]
    parent.end("KILLED")
    shutil.rmtree(tmp_path / "sweep")
