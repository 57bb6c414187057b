"""Tiny run configs and command-line runs for the runner's tests: every file goes to tmp_path."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import DictConfig

import rnnexp.config  # noqa: F401  (registers the schemas the configs name)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# A run of about a second: 400 sentences of a 40-word language, 8 hidden units, one epoch, a
# learning rate that shows progress within it.
TINY = [
    "hidden_dim=8",
    "vocab_size=40",
    "lr=2",
    "epochs=1",
    "batch_size=16",
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
