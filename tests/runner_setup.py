"""Tiny run configs and command-line runs for the runner's tests: every file goes to tmp_path."""

from __future__ import annotations

import atexit
import functools
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import DictConfig

import rnnexp.config  # noqa: F401  (registers the schemas the configs name)
from rnnexp.errors import UserError
from rnnexp.training import checkpoint

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# A run of about a second: 400 sentences of a 40-word language, 8 hidden units, one epoch, a
# learning rate that shows progress within it.
TINY = [
    "model.hidden_dim=8",
    "dataset.vocab_size=40",
    "optim.lr=2",
    "train.epochs=1",
    "train.batch_size=16",
    "dataset.synthetic.n_sentences=400",
    "train.samples=2",
    "blas_threads=1",
]


def store_overrides(tmp_path: Path) -> list[str]:
    """Overrides that keep the MLflow store and checkpoints inside tmp_path."""
    return [f"tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"train.checkpoint_dir={tmp_path}/checkpoints"]


@functools.cache
def _empty_store() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="rnnexp-store-"))
    atexit.register(shutil.rmtree, folder, True)
    MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()  # creates MLflow's tables
    return folder / "mlflow.db"


def store(tmp_path: Path) -> list[str]:
    """A ready MLflow store in tmp_path, and the overrides that point runs at it.

    Creating a store's tables takes seconds, so they are created once per session and copied.
    """
    if not (tmp_path / "mlflow.db").exists():
        shutil.copy(_empty_store(), tmp_path / "mlflow.db")
    return store_overrides(tmp_path)


def compose_run(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*TINY, *store(tmp_path), *overrides])


def command(tmp_path: Path, *args: str, module: str = "rnnexp.run") -> list[str]:
    """The command line; flags such as -m go first, since argparse takes no flag among the overrides."""
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    return [
        sys.executable,
        "-m",
        module,
        *flags,
        *overrides,
        f"hydra.run.dir={tmp_path}/hydra",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]


def run_cli(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(tmp_path, *args), cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def run_on_trained(tmp_path: Path, module: str, run_id: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m rnnexp.generate|evaluate run_id=...` on a run trained into tmp_path's store."""
    common = [
        f"run_id={run_id}",
        f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"checkpoint_dir={tmp_path}/checkpoints",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    done = subprocess.run(
        [sys.executable, "-m", module, *common, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def wait_for(predicate: Callable[[], bool], process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"training ended before the test could kill it:\n{process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.002)


def saved_progress(path: Path | None) -> dict:
    """A checkpoint's progress, or {} while it does not exist or is half written."""
    try:
        return checkpoint.load(path).meta["progress"] if path is not None else {}
    except (UserError, FileNotFoundError):
        return {}


def kill_mid_epoch_2(
    tmp_path: Path, overrides: list[str], other_run_id: str, on_first: Callable[[Path], None] | None = None
) -> Path:
    """Train `overrides` on the command line, SIGKILL it once its last.npz is mid-epoch 2; that checkpoint.

    `on_first` sees the run's first checkpoint as soon as it appears; `other_run_id`'s checkpoints
    (the uninterrupted reference) are not the run's own.
    """
    process = subprocess.Popen(
        command(tmp_path, *TINY, *store(tmp_path), *overrides),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )

    def own() -> Path | None:
        found = [p for p in (tmp_path / "checkpoints").glob("*/last.npz") if p.parent.name != other_run_id]
        return found[0] if found else None

    try:
        if on_first is not None:
            wait_for(lambda: own() is not None, process)
            on_first(own())
        wait_for(lambda: saved_progress(own()).get("epoch", 0) >= 1 and saved_progress(own())["position"] > 0, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed = own()
    assert killed is not None
    return killed


def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def metric_histories(
    client: MlflowClient, run_id: str, skip: tuple[str, ...] = ("tokens_per_sec", "tokens_per_sec_mean")
) -> dict:
    """Every metric of a run as (step, value) lists, leaving out timings and the machine's `system/` metrics
    (sampled every 10 s), which no two runs share."""
    keys = sorted(client.get_run(run_id).data.metrics)
    return {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in keys
        if key not in skip and not key.startswith("system/")
    }


def evaluate_error(tmp_path: Path, run_id: str, *args: str) -> str:
    """`python -m rnnexp.evaluate` on a run in tmp_path's store, expected to refuse: its one stderr line."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnexp.evaluate",
            f"run_id={run_id}",
            f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"checkpoint_dir={tmp_path}/checkpoints",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]
