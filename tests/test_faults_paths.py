"""Unwritable places and full disks: one sentence naming the path and what to do, exit 2, within seconds.

Root ignores file modes, so read-only folders are read-only bind mounts and a full disk is a tiny
tmpfs, each inside a private mount namespace (`unshare -m`) that vanishes with the command.
"""

from __future__ import annotations

import math
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults_setup import ROOT, in_mount_namespace, unshare_missing
from runner_setup import TINY, client, command, store

from rnnexp.training import checkpoint

pytestmark = pytest.mark.faults

# What bounds "within seconds" here: MLflow's own retries took about 100 s before.
PROMPT_S = 30


@pytest.fixture(autouse=True)
def _needs_unshare() -> None:
    missing = unshare_missing()
    if missing:
        pytest.skip(missing)


def run_inside(tmp_path: Path, mounts: str, *args: str, cwd: Path | None = None) -> tuple[int, list[str], float]:
    """The command line in a namespace with `mounts` done: exit status, stderr lines, seconds.

    With `cwd`, the run's Hydra output folder is Hydra's default, inside it."""
    argv = command(tmp_path, *TINY, *args)
    line = shlex.join(argv[:-2] if cwd else argv)
    folder = shlex.quote(str(cwd or tmp_path))
    script = f"{mounts}\ncd {folder}\nset +e\n{line} 2> {tmp_path}/stderr\necho $? > {tmp_path}/rc"
    started = time.monotonic()
    result = in_mount_namespace(script, tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return int((tmp_path / "rc").read_text()), (tmp_path / "stderr").read_text().strip().splitlines(), elapsed


def read_only(folder: Path) -> str:
    return f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))}\nmount -o remount,bind,ro {folder}"


def test_a_read_only_working_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    status, errors, elapsed = run_inside(tmp_path, read_only(work), cwd=work)
    assert (status, errors) == (
        2,
        [
            f"error: cannot write {work}/outputs (Read-only file system): run from a writable "
            "folder, or set hydra.run.dir (hydra.sweep.dir for a sweep) to one."
        ],
    )
    assert elapsed < PROMPT_S
    print(f"one sentence, exit 2, in {elapsed:.1f} s (the whole command, Python's start included)")


@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
def test_a_sqlite_store_in_a_read_only_folder(tmp_path: Path, existing: bool) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    if existing:
        store(folder)
    status, errors, elapsed = run_inside(
        tmp_path,
        read_only(folder),
        f"tracking_uri=sqlite:///{folder}/mlflow.db",
        f"train.checkpoint_dir={tmp_path}/checkpoints",
    )
    assert (status, errors) == (
        2,
        [
            f"error: the MLflow store's folder {folder} is not writable (sqlite writes a "
            "journal beside mlflow.db): make it writable or choose another tracking_uri."
        ],
    )
    assert elapsed < PROMPT_S
    print(f"one sentence, exit 2, in {elapsed:.1f} s (the whole command, Python's start included)")
    if existing:  # reading it still works
        listing = in_mount_namespace(
            f"{read_only(folder)}\n{shlex.quote(sys.executable)} -m rnnexp.repair "
            f"tracking_uri=sqlite:///{folder}/mlflow.db",
            ROOT,
        )
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.strip() == "no run is RUNNING without its process."


def test_a_read_only_artifact_folder_fails_the_run_at_its_start(tmp_path: Path) -> None:
    overrides = store(tmp_path)
    artifacts = tmp_path / "mlartifacts"  # where a sqlite store's experiments keep their artifacts
    artifacts.mkdir()
    status, errors, elapsed = run_inside(tmp_path, read_only(artifacts), *overrides)
    (run,) = client(tmp_path).search_runs([client(tmp_path).get_experiment_by_name("rnnexp").experiment_id])
    folder = artifacts / "rnnexp" / run.info.run_id / "artifacts"
    reason = (
        f"cannot write the run's artifacts to {folder} (Read-only file system): make that folder writable or "
        "free space there, or log to another tracking_uri."
    )
    assert (status, errors) == (2, [f"error: {reason}"])
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == reason
    assert elapsed < PROMPT_S
    print(f"one sentence, exit 2, in {elapsed:.1f} s (the whole command, Python's start included)")


def test_a_vanished_artifact_folder_is_made_again(tmp_path: Path) -> None:
    overrides = store(tmp_path)
    status, errors, _ = run_inside(tmp_path, "true", *overrides)
    assert status == 0, errors
    mlflow = client(tmp_path)
    experiment = mlflow.get_experiment_by_name("rnnexp")
    for path in sorted((tmp_path / "mlartifacts").rglob("*"), reverse=True):  # the whole artifact tree is gone
        path.unlink() if path.is_file() else path.rmdir()

    status, errors, _ = run_inside(tmp_path, "true", *overrides)

    assert status == 0, errors
    newest = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert newest.info.status == "FINISHED"
    assert {"config.yaml", "checkpoints"} <= {a.path for a in mlflow.list_artifacts(newest.info.run_id)}


def test_a_full_checkpoint_disk_keeps_the_last_good_checkpoint_and_no_partial(tmp_path: Path) -> None:
    overrides = [*store(tmp_path), "train.checkpoint_every=3"]
    status, errors, _ = run_inside(tmp_path, "true", *overrides, f"train.checkpoint_dir={tmp_path}/reference")
    assert status == 0, errors
    (reference,) = (tmp_path / "reference").glob("*/last.npz")
    pages = math.ceil(reference.stat().st_size / 4096)
    full = tmp_path / "full"
    full.mkdir()
    # room for best.npz and one last.npz, not for the next last.npz beside it: full at step 6
    mounts = f"mount -t tmpfs -o size={(2 * pages + 1) * 4096} tmpfs {full}"
    keep = f"; cp -r {full} {tmp_path}/after"
    line = shlex.join(command(tmp_path, *TINY, *overrides, f"train.checkpoint_dir={full}"))
    script = f"{mounts}\ncd {tmp_path}\nset +e\n{line} 2> {tmp_path}/stderr\necho $? > {tmp_path}/rc{keep}"
    started = time.monotonic()
    assert in_mount_namespace(script, tmp_path).returncode == 0
    elapsed = time.monotonic() - started

    errors = (tmp_path / "stderr").read_text().strip().splitlines()
    (folder,) = (tmp_path / "after").iterdir()
    run = client(tmp_path).get_run(folder.name)
    reason = (
        f"cannot write the checkpoint {full}/{folder.name}/last.npz (No space left on device): free space in "
        f"{full}/{folder.name}, or set train.checkpoint_dir to another folder; the last good checkpoint is intact."
    )
    assert (int((tmp_path / "rc").read_text()), errors) == (2, [f"error: {reason}"])
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == reason
    assert sorted(p.name for p in folder.iterdir()) == ["best.npz", "last.npz"]  # no .partial
    assert checkpoint.load(folder / "last.npz").meta["progress"]["step"] == 3
    assert elapsed < PROMPT_S
    print(f"one sentence, exit 2, in {elapsed:.1f} s (the whole command, Python's start included)")


def all_runs(tmp_path: Path) -> list[tuple[str, str]]:
    mlflow = client(tmp_path)
    found = mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])
    return sorted((run.info.run_id, run.info.status) for run in found)


def test_a_read_only_store_file_in_a_writable_folder(tmp_path: Path) -> None:
    overrides = store(tmp_path)
    db = tmp_path / "mlflow.db"
    before = all_runs(tmp_path)
    status, errors, elapsed = run_inside(tmp_path, read_only(db), *overrides)
    assert (status, errors) == (
        2,
        [f"error: the MLflow store {db} is read-only: make it writable (chmod u+w), or choose another tracking_uri."],
    )
    assert all_runs(tmp_path) == before == []
    assert elapsed < PROMPT_S


def test_generate_from_a_read_only_folder_names_checkpoint_dir(tmp_path: Path) -> None:
    trained = run_inside(tmp_path, "true", *store(tmp_path), f"train.checkpoint_dir={tmp_path}/elsewhere")
    assert trained[0] == 0, trained[1]
    ((run_id, _),) = all_runs(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    generate = shlex.join(
        [
            sys.executable,
            "-m",
            "rnnexp.generate",
            f"run_id={run_id}",
            f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.run.dir={tmp_path}/hydra",
        ]
    )
    script = f"{read_only(work)}\ncd {work}\nset +e\n{generate} 2> {tmp_path}/stderr\necho $? > {tmp_path}/rc"
    assert in_mount_namespace(script, tmp_path).returncode == 0
    errors = (tmp_path / "stderr").read_text().strip().splitlines()
    assert (int((tmp_path / "rc").read_text()), errors) == (
        2,
        [
            f"error: cannot copy run {run_id}'s checkpoint into {work}/checkpoints/{run_id} (Read-only file "
            "system): set checkpoint_dir= to a writable folder."
        ],
    )
    assert all_runs(tmp_path) == [(run_id, "FINISHED")]


def test_a_store_locked_by_another_process_waits_then_one_line(tmp_path: Path) -> None:
    overrides = store(tmp_path)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # an open sqlite3 shell in a transaction, held longer than the wait
    try:
        started = time.monotonic()
        done = subprocess.run(
            command(tmp_path, *TINY, *overrides), cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"error: the MLflow store {tmp_path}/mlflow.db stayed locked by another process for 30 s: end what "
            "holds it (an open sqlite3 shell or database browser, a stuck run), or choose another tracking_uri."
        ],
    )
    assert f"the MLflow store {tmp_path}/mlflow.db is locked by another process: waiting up to 30 s" in done.stdout
    assert all_runs(tmp_path) == []
    print(f"one warning, then one sentence after {elapsed:.0f} s")
