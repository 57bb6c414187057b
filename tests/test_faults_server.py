"""A tracking server killed mid-run never stops training: one warning, nothing lost, nothing twice.

The server is killed with SIGKILL after the run's first epoch reached it. Either it comes back on
the same port and store while the run trains, and the run ends FINISHED with every metric sent
once; or it stays away, the run trains to its end and says in one sentence how to finish it, and
`resume=` does so once the server is back. Both end with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faults_setup import MlflowServer, mlflow_server
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from runner_setup import TINY, command, compose_run

from rnnexp.tracking import train
from rnnexp.tracking.logger import FINAL_WAIT_S, SLOW_REQUEST_S
from rnnexp.training import checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SETUP = [
    "train.epochs=40",
    "train.flush_every_s=0",
    "train.log_every=2",
    "train.checkpoint_every=3",
    "experiment_name=served",
]
TIMINGS = ("tokens_per_sec", "tokens_per_sec_mean")


def histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric as sorted (step, value) pairs, duplicates kept; timings and machine samples left out."""
    keys = [key for key in client.get_run(run_id).data.metrics if key not in TIMINGS and not key.startswith("system/")]
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in sorted(keys)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple[int, float]]]:
    folder = tmp_path_factory.mktemp("reference")
    train(compose_run(folder, *SETUP))
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    return histories(client, run.info.run_id)


def start_run_and_kill_the_server_after_epoch_1(
    tmp_path: Path, server: MlflowServer, stop: Callable[[MlflowServer], None] = MlflowServer.kill
) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        command(tmp_path, *TINY, *SETUP, f"tracking_uri={server.uri}", f"train.checkpoint_dir={tmp_path}/checkpoints"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = server.client()
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the run's first epoch never reached the server"
        try:
            experiment = client.get_experiment_by_name("served")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
        except MlflowException:
            runs = []
        if runs and any(m.step > 0 for m in client.get_metric_history(runs[0].info.run_id, "val_loss")):
            break
        time.sleep(0.2)
    stop(server)
    return process, runs[0].info.run_id


def progress(tmp_path: Path, run_id: str) -> int:
    try:
        return checkpoint.load(tmp_path / "checkpoints" / run_id / "last.npz").meta["progress"]["step"]
    except Exception:  # noqa: BLE001 - mid-replace
        return -1


def test_a_server_killed_mid_run_and_started_again_loses_nothing(tmp_path: Path, uninterrupted) -> None:
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "served")
    server.start()
    try:
        process, run_id = start_run_and_kill_the_server_after_epoch_1(tmp_path, server)
        at_kill, killed = progress(tmp_path, run_id), time.monotonic()
        while progress(tmp_path, run_id) < at_kill + 30:  # ten more checkpoints: training goes on
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.05)
        trained_on = time.monotonic() - killed
        server.start()
        output, _ = process.communicate(timeout=600)
        client = server.client()
        assert process.returncode == 0, output
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
        assert histories(client, run_id) == uninterrupted  # every step once, none lost
        assert {"best.npz", "last.npz"} <= {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "checkpoints")}
    finally:
        server.kill()
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, warnings  # gone, and back
    assert "stopped answering (Connection refused): training goes on" in warnings[0]
    assert "answers again" in warnings[1]
    print(f"server killed at step {at_kill}: 30 more steps trained in {trained_on:.1f} s; FINISHED, 0 duplicates")


def test_a_server_that_stays_away_ends_the_run_in_one_sentence_and_resume_finishes_it(
    tmp_path: Path, uninterrupted
) -> None:
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "served")
    server.start()
    try:
        process, run_id = start_run_and_kill_the_server_after_epoch_1(tmp_path, server)
        killed = time.monotonic()
        output, _ = process.communicate(timeout=600)
        ended_in = time.monotonic() - killed
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert process.returncode == 2
        assert len(errors) == 1 and len([line for line in output.splitlines() if "WARNING" in line]) == 1
        assert errors[0].startswith(f"error: the tracking server at {server.uri} has not answered since ")
        assert errors[0].endswith(f"when the server is back, resume={run_id} sends them and closes it.")
        assert progress(tmp_path, run_id) == 40 * 20  # trained to the end

        server.start()
        client = server.client()
        assert client.get_run(run_id).info.status == "RUNNING"  # what the server last heard
        resumed = subprocess.run(
            command(
                tmp_path,
                f"tracking_uri={server.uri}",
                f"resume={run_id}",
                f"train.checkpoint_dir={tmp_path}/checkpoints",
            ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert client.get_run(run_id).info.status == "FINISHED"
        assert histories(client, run_id) == uninterrupted
    finally:
        server.kill()
    print(
        f"server killed mid-run and kept away: the run trained to its end and exited 2 {ended_in:.1f} s after the "
        f"kill (final wait {FINAL_WAIT_S:.0f} s); resume sent the rest, FINISHED, 0 duplicates"
    )


def test_a_frozen_server_is_said_within_the_request_timeout_and_the_run_goes_on(tmp_path: Path) -> None:
    """SIGSTOP: the server's socket still accepts, so nothing fails fast; before, the first word came after 62 s."""
    lines: list[tuple[float, str]] = []
    frozen_at = 0.0

    def freeze(server: MlflowServer) -> None:
        nonlocal frozen_at
        os.killpg(server.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        frozen_at = time.monotonic()

    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path / "artifacts") as server:
        process, run_id = start_run_and_kill_the_server_after_epoch_1(tmp_path, server, stop=freeze)
        reader = threading.Thread(
            target=lambda: lines.extend((time.monotonic(), line) for line in process.stdout), daemon=True
        )
        reader.start()
        deadline = time.monotonic() + 120
        while not any("has not answered for" in line for _, line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(server.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
        assert process.wait(timeout=600) == 0, "".join(line for _, line in lines)
        reader.join(timeout=10)
        said = [(at, line) for at, line in lines if "has not answered for" in line]
        assert said, "".join(line for _, line in lines)
        waited = said[0][0] - frozen_at
        # said while the first request still waits (MLFLOW_HTTP_REQUEST_TIMEOUT is 20 s), not after its retries
        assert SLOW_REQUEST_S <= waited < 20, waited
        assert server.client().get_run(run_id).info.status == "FINISHED"
        print(f"the first word {waited:.1f} s after the server froze")
