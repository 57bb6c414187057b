"""Services and sandboxes for the fault-injection suite: an mlflow server, a PostgreSQL, read-only mounts.

Everything listens on 127.0.0.1 only. PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user, in a folder of its own under /tmp (pytest's tmp_path is closed to other users).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rnnexp.errors import UserError
from rnnexp.tracking.store import check_reachable

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1, which a test may kill and start again on the same port and store."""

    def __init__(self, backend: str, artifacts: Path, workers: int = 1):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(artifacts),
        ]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                check_reachable(self.uri)
                return
            except UserError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL the server and its workers at once: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, workers: int = 1) -> Iterator[MlflowServer]:
    server = MlflowServer(backend, artifacts, workers)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def postgres_missing() -> str | None:
    """Why a real PostgreSQL cannot be started here, or None."""
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing)"
    if importlib.util.find_spec("psycopg") is None:
        return "the psycopg driver is not installed (pip install -e '.[postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run PostgreSQL as"
    return None


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A new PostgreSQL cluster on a free loopback port; yields the SQLAlchemy URI of its `mlflow` database."""
    folder = Path(tempfile.mkdtemp(prefix="rnnexp-pg-"))
    port = free_port()
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, "postgres", "postgres")

    def pg(*command: str) -> None:
        line = " ".join(shlex.quote(part) for part in command)
        args = ["su", "postgres", "-s", "/bin/sh", "-c", line] if as_root else ["sh", "-c", line]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    data = folder / "data"
    try:
        pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8")
        pg(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-w",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
            "start",
        )
        pg(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def unshare_missing() -> str | None:
    """Why read-only and tiny mounts cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return "unshare -m needs root (or CAP_SYS_ADMIN), to bind-mount read-only folders"
    return None


def in_mount_namespace(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace: its `mount`s vanish with it."""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
