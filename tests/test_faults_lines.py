"""Store faults, data that cannot be read and concurrent resumes: each one line, never a traceback."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from runner_setup import client, compose_run, store

from rnnexp.config import resolve
from rnnexp.data import load_corpus
from rnnexp.errors import UserError
from rnnexp.tracking import lifecycle, logger, session
from rnnexp.tracking import store as stores


def test_a_sqlite_uri_that_names_a_folder_is_refused_before_mlflow_retries(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for uri in (f"sqlite:///{tmp_path}", "sqlite:///"):  # the second: the working folder
        with pytest.raises(UserError) as refused:
            stores.connect(stores.resolve_tracking_uri(uri), writing=True)
        assert str(refused.value) == (
            f"tracking_uri sqlite:///{tmp_path} names the folder {tmp_path}, not a database file: use "
            f"sqlite:///{tmp_path}/mlflow.db."
        )
    assert list(tmp_path.iterdir()) == []  # nothing created there


def test_an_unknown_scheme_names_the_schemes_not_a_repair(tmp_path: Path) -> None:
    with pytest.raises(UserError) as refused:
        stores.connect(stores.resolve_tracking_uri("bogus://somewhere"))
    assert str(refused.value) == (
        "tracking_uri bogus://somewhere has a scheme MLflow does not know: use sqlite:///mlflow.db, an http:// "
        "tracking server or a postgresql:// database."
    )


@pytest.fixture
def locked_store(tmp_path: Path):
    """A store whose file another connection holds locked (what an open sqlite3 shell in a transaction does)."""
    store(tmp_path)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    yield tmp_path / "mlflow.db", holder
    holder.close()


def test_a_store_locked_past_the_wait_is_said_then_one_line(locked_store, monkeypatch, caplog) -> None:
    db, _ = locked_store
    monkeypatch.setattr(stores, "STORE_LOCK_WAIT_S", 0.5)
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as refused:
        stores.connect(f"sqlite:///{db}", writing=True)
    assert str(refused.value) == (
        f"the MLflow store {db} stayed locked by another process for 0 s: end what holds it (an open sqlite3 "
        "shell or database browser, a stuck run), or choose another tracking_uri."
    )
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"the MLflow store {db} is locked by another process: waiting up to 0 s"
    ]


def test_a_store_unlocked_during_the_wait_is_used(locked_store, monkeypatch) -> None:
    db, holder = locked_store
    monkeypatch.setattr(stores, "STORE_LOCK_WAIT_S", 30.0)
    threading.Timer(1.5, holder.rollback).start()  # released after the first second's try
    mlflow = stores.connect(f"sqlite:///{db}", writing=True)
    assert mlflow.search_experiments()[0].name == "Default"


def test_a_read_only_store_file_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """Root writes a chmod 444 file anyway, so this is the check alone; test_faults_paths mounts one read-only."""
    store(tmp_path)
    db = tmp_path / "mlflow.db"
    monkeypatch.setattr(stores.os, "access", lambda path, mode: Path(path) != db)
    with pytest.raises(UserError) as refused:
        stores.connect(f"sqlite:///{db}", writing=True)
    assert str(refused.value) == (
        f"the MLflow store {db} is read-only: make it writable (chmod u+w), or choose another tracking_uri."
    )


class StoreThatFails:
    """A run logger whose store fails the way sqlite does under a lock or on a full disk."""

    run_id = "0123abcd"

    def __init__(self, fault: str | None):
        self.fault, self.ended = fault, []

    def end(self, status: str, reason: str | None = None) -> None:
        self.ended.append((status, reason))
        if self.fault:
            raise MlflowException(f"(sqlite3.OperationalError) {self.fault}\n[SQL: UPDATE runs SET status=?]")


def test_a_store_that_fails_under_a_run_is_a_sentence_in_its_failed_run() -> None:
    run = StoreThatFails(None)
    with pytest.raises(UserError) as failed, lifecycle.run_status(run):  # type: ignore[arg-type]
        raise MlflowException("(sqlite3.OperationalError) database is locked\n[SQL: INSERT INTO metrics ...]")
    reason = (
        "the MLflow store stopped recording run 0123abcd (another process held it locked): fix that, then "
        "resume=0123abcd continues it from its last checkpoint."
    )
    assert str(failed.value) == reason and run.ended == [("FAILED", reason)]  # no SQL in the reason


def test_a_full_disk_while_closing_a_failed_run_leaves_the_failures_own_line(caplog) -> None:
    run = StoreThatFails("database or disk is full")
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as failed, lifecycle.run_status(run):  # type: ignore[arg-type]
        raise UserError("cannot write the checkpoint /x/last.npz (No space left on device): free space in /x.")
    assert str(failed.value).startswith("cannot write the checkpoint /x/last.npz")
    assert run.ended == [("FAILED", str(failed.value))]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "could not mark run 0123abcd FAILED in the MLflow store (its disk is full)"
    ]


def test_a_full_disk_while_closing_a_finished_run_is_a_sentence() -> None:
    with pytest.raises(UserError, match=r"^the MLflow store stopped recording run 0123abcd \(its disk is full\)"):
        with lifecycle.run_status(StoreThatFails("database or disk is full")):  # type: ignore[arg-type]
            pass


def test_a_frozen_server_is_said_while_training_waits(monkeypatch, caplog) -> None:
    class FrozenServer:
        tracking_uri = "http://127.0.0.1:9"

        def log_batch(self, run_id: str, metrics: list) -> None:
            time.sleep(0.8)  # a server that answers late, after the warning

    monkeypatch.setattr(logger, "SLOW_REQUEST_S", 0.2)
    run = logger.RunLogger(FrozenServer(), "0123abcd")  # type: ignore[arg-type]
    run.log_metrics({"train_loss": 1.0}, step=1)
    with caplog.at_level(logging.WARNING):
        run.flush()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "the tracking server at http://127.0.0.1:9 has not answered for 0 s: training waits for it up to about a "
        "minute, then goes on and keeps the metrics until it answers"
    ]
    assert run.pending() == []  # sent once it answered


def test_a_second_resume_of_a_run_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    first = session.claim_run("sqlite:////x/mlflow.db", "0123abcd")
    with pytest.raises(UserError) as refused:
        session.claim_run("sqlite:////x/mlflow.db", "0123abcd")
    assert str(refused.value) == (
        "run 0123abcd is being resumed by another process on this machine: let that one continue it (resume it "
        "again only if that one stops before it finishes)."
    )
    session.claim_run("sqlite:////x/mlflow.db", "another").close()  # other runs are free
    first.close()
    session.claim_run("sqlite:////x/mlflow.db", "0123abcd").close()  # free again once the first ends


def test_a_dataset_file_that_cannot_be_read_is_named_and_fails_the_run(tmp_path: Path, monkeypatch) -> None:
    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "corpus.txt"))

    monkeypatch.setattr(session, "load_corpus", unreadable)
    with pytest.raises(UserError) as failed:
        session.train(compose_run(tmp_path, "experiment_name=unreadable"))
    assert str(failed.value) == (
        f"cannot read {tmp_path}/corpus.txt (Permission denied): make it readable, or point dataset.path (or "
        "dataset.data_dir) at a readable copy."
    )
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("unreadable").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == str(failed.value)


def test_a_permission_error_inside_the_run_is_not_blamed_on_the_output_folder(tmp_path: Path) -> None:
    """Before, any EACCES reached the user as "cannot write <the output folder>"; now the file is named."""
    script = (
        "import runpy, sys\n"
        "from rnnexp.tracking import session\n"
        "def denied(*args, **kwargs):\n"
        "    raise PermissionError(13, 'Permission denied', '/data/corpus.txt')\n"
        "session.train = denied\n"
        f"sys.argv = ['rnnexp.run', 'tracking_uri=sqlite:///{tmp_path}/mlflow.db', 'hydra.run.dir={tmp_path}/out']\n"
        "runpy.run_module('rnnexp.run', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        ["error: cannot use /data/corpus.txt (Permission denied): check its permissions, or point the run elsewhere."],
    )


def test_the_entry_point_answers_a_store_fault_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rnnexp.run", f"tracking_uri=sqlite:///{tmp_path}", f"hydra.run.dir={tmp_path}/out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"error: tracking_uri sqlite:///{tmp_path} names the folder {tmp_path}, not a database file: use "
            f"sqlite:///{tmp_path}/mlflow.db."
        ],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no store made


def test_a_device_as_the_dataset_is_called_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(UserError) as refused:
        resolve_and_load(tmp_path, "dataset=text", "dataset.path=/dev/zero")
    assert str(refused.value).startswith("/dev/zero is not a regular file (a device, a pipe or a socket)")
    with pytest.raises(UserError, match=rf"^{tmp_path}/absent.txt does not exist"):
        resolve_and_load(tmp_path, "dataset=text", f"dataset.path={tmp_path}/absent.txt")


def resolve_and_load(tmp_path: Path, *overrides: str) -> None:
    cfg = resolve(compose_run(tmp_path, *overrides))
    load_corpus(cfg.dataset, seed=cfg.seed, cache_dir=tmp_path / "cache")
