"""What a run is described by: its config as flat params, and where and with what it ran, as tags."""

from __future__ import annotations

import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME
from threadpoolctl import threadpool_info

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the checkout this package runs from; ('unknown', False) outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, check=True).stdout

    try:
        return git("rev-parse", "HEAD").strip(), bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def environment_tags() -> dict[str, str]:
    """Where and with what a run ran: code version, numerical libraries, machine."""
    commit, dirty = git_state()
    blas = [
        f"{lib['internal_api']} {lib['version']} ({lib['num_threads']} threads)"
        for lib in threadpool_info()
        if lib["user_api"] == "blas"
    ]
    return {
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "mlflow.source.git.commit": commit,
        MLFLOW_SOURCE_NAME: "rnnexp",
        "numpy": np.__version__,
        "blas": "; ".join(blas) or "unknown",
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }


def flat_params(node: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as flat dotted keys (`model.hidden_dim`), the way MLflow shows params."""
    flat: dict[str, str] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
