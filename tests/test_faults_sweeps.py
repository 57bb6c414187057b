"""Statuses that tell the truth: interrupted sweeps, killed launchers, stale runs, resumes refused or restarted.

Ctrl-C is SIGINT to the whole process group, as a terminal sends it; "kill" is SIGTERM or SIGKILL
to the launching process alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from runner_setup import TINY, store

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SWEEP = ["train.epochs=6", "train.checkpoint_every=3", "model.hidden_dim=8,12,16", "experiment_name=sweeps"]
TIMINGS = ("tokens_per_sec", "tokens_per_sec_mean")


def launch(folder: Path, *args: str) -> subprocess.Popen:
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnnexp.run",
            *flags,
            *TINY,
            *store(folder),
            *overrides,
            f"hydra.run.dir={folder}/hydra",
            f"hydra.sweep.dir={folder}/sweep",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def resume(folder: Path, run_id: str, *overrides: str, run_dir: str = "hydra") -> subprocess.CompletedProcess:
    """`python -m rnnexp.run resume=<run_id>` on the folder's store, to its end."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnexp.run",
            f"resume={run_id}",
            *overrides,
            *store(folder),
            f"hydra.run.dir={folder}/{run_dir}",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
    )


def wait_for(predicate, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"it ended first:\n{process.stderr.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def mlflow(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlflow.db")


def runs_of(folder: Path, experiment: str = "sweeps"):
    client = mlflow(folder)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    parents = [run for run in runs if run.data.tags.get("sweep") == "true"]
    return parents, [run for run in runs if run.data.tags.get("sweep") != "true"]


def histories(client: MlflowClient, run_id: str) -> dict:
    keys = [key for key in client.get_run(run_id).data.metrics if key not in TIMINGS and not key.startswith("system/")]
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in sorted(keys)}


def by_hidden(folder: Path) -> dict[str, dict]:
    _, children = runs_of(folder)
    return {run.data.params["model.hidden_dim"]: histories(mlflow(folder), run.info.run_id) for run in children}


def test_ctrl_c_stops_a_parallel_sweep_and_resume_finishes_it_exactly(tmp_path: Path) -> None:
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    reference.mkdir()
    interrupted.mkdir()
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m"]
    whole = launch(reference, *SWEEP, *joblib)
    process = launch(interrupted, *SWEEP, *joblib)
    wait_for(lambda: len(list((interrupted / "checkpoints").glob("*/last.npz"))) >= 2, process)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert whole.wait(timeout=600) == 0

    (parent,), children = runs_of(interrupted)
    parent_id = parent.info.run_id
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: the sweep was stopped by signal 2: python -m rnnexp.run resume={parent_id} runs its "
        "unfinished jobs, from their checkpoints, and compares them."
    )
    assert parent.info.status == "KILLED" and parent.data.tags["failure_reason"].startswith("the sweep was stopped")
    assert {run.info.status for run in children} == {"KILLED"}  # none left RUNNING
    interrupted_ids = {run.info.run_id for run in children}

    resumed = resume(interrupted, parent_id)
    assert resumed.returncode == 0, resumed.stderr
    (parent,), children = runs_of(interrupted)
    assert parent.info.status == "FINISHED" and "failure_reason" not in parent.data.tags
    assert {run.info.status for run in children} == {"FINISHED"} and len(children) == 3
    assert interrupted_ids <= {run.info.run_id for run in children}  # continued in their own runs
    assert by_hidden(interrupted) == by_hidden(reference)  # bitwise the uninterrupted sweep's metrics
    assert {"comparison.md", "comparison.csv"} <= {a.path for a in mlflow(interrupted).list_artifacts(parent_id)}


def test_sigterm_to_the_launcher_leaves_the_parent_killed_with_the_reason(tmp_path: Path) -> None:
    process = launch(tmp_path, *SWEEP, "train.epochs=40", "-m")
    wait_for(lambda: any((tmp_path / "checkpoints").glob("*/last.npz")), process)
    os.kill(process.pid, signal.SIGTERM)
    process.communicate(timeout=120)
    (parent,), children = runs_of(tmp_path)
    assert process.returncode == 130
    assert parent.info.status == "KILLED"
    assert parent.data.tags["failure_reason"].endswith(
        f"resume={parent.info.run_id} runs its unfinished jobs, from their checkpoints, and compares them."
    )
    assert [run.info.status for run in children] == ["KILLED"]  # the others never started


def test_a_launcher_killed_with_sigkill_leaves_runs_that_python_m_rnnexp_repair_finds(tmp_path: Path) -> None:
    process = launch(tmp_path, *SWEEP, "train.epochs=40", "-m")
    wait_for(lambda: any((tmp_path / "checkpoints").glob("*/last.npz")), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (parent,), (child,) = runs_of(tmp_path)
    assert {parent.info.status, child.info.status} == {"RUNNING"}

    def tool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rnnexp.repair", f"tracking_uri=sqlite:///{tmp_path}/mlflow.db", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    listed = tool()
    assert listed.returncode == 0, listed.stderr
    assert parent.info.run_id in listed.stdout and child.info.run_id in listed.stdout
    assert listed.stdout.strip().splitlines()[-1].startswith("2 run(s) RUNNING without their process")
    assert tool("action=mark_killed").returncode == 0
    (parent,), (child,) = runs_of(tmp_path)
    assert {parent.info.status, child.info.status} == {"KILLED"}
    assert child.data.tags["failure_reason"].startswith("its process (pid ")
    assert tool().stdout.strip() == "no run is RUNNING without its process."


def test_resume_refuses_a_run_still_training_elsewhere(tmp_path: Path) -> None:
    process = launch(tmp_path, "train.epochs=400", "train.checkpoint_every=3", "experiment_name=live")
    try:
        wait_for(lambda: any((tmp_path / "checkpoints").glob("*/last.npz")), process)
        (run_id,) = [path.name for path in (tmp_path / "checkpoints").iterdir()]
        refused = resume(tmp_path, run_id, run_dir="again")
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: run {run_id} is still running (pid {process.pid} on host {os.uname().nodename}, last heartbeat "
        f"{refused.stderr.split('last heartbeat ')[1].split(' s ago')[0]} s ago): stop that process first (Ctrl-C, or "
        "kill its pid), since two processes logging into one run would duplicate its metrics."
    ]


def test_a_run_killed_before_its_first_checkpoint_restarts_from_step_0_in_the_same_run(tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    setup = ["dataset.synthetic.n_sentences=4000", "train.checkpoint_every=0", "experiment_name=early"]
    whole = launch(reference, *setup)
    process = launch(killed, *setup)

    def described() -> bool:
        _, runs = runs_of(killed, "early")
        return bool(runs) and any(a.path == "vocab.json" for a in mlflow(killed).list_artifacts(runs[0].info.run_id))

    wait_for(described, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert whole.wait(timeout=600) == 0
    _, (run,) = runs_of(killed, "early")
    assert run.info.status == "RUNNING" and not (killed / "checkpoints" / run.info.run_id / "last.npz").exists()

    resumed = resume(killed, run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    _, (again,) = runs_of(killed, "early")
    _, (whole_run,) = runs_of(reference, "early")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert histories(mlflow(killed), run.info.run_id) == histories(mlflow(reference), whole_run.info.run_id)


def test_a_resumed_run_loses_its_failure_reason(tmp_path: Path) -> None:
    process = launch(tmp_path, "train.epochs=60", "train.checkpoint_every=3", "experiment_name=again")
    wait_for(lambda: any((tmp_path / "checkpoints").glob("*/last.npz")), process)
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=120)
    _, (run,) = runs_of(tmp_path, "again")
    assert run.info.status == "KILLED" and "failure_reason" in run.data.tags
    resumed = resume(tmp_path, run.info.run_id, "train.epochs=60")
    assert resumed.returncode == 2 and "train.epochs=60 would be ignored" in resumed.stderr  # resume keeps its config
    resumed = resume(tmp_path, run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    _, (run,) = runs_of(tmp_path, "again")
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
