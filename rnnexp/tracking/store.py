"""Which MLflow store runs go to, and the experiment they land in.

A sqlite path is made absolute, so that every job of a sweep, wherever it runs, writes to the same
file; an http:// server is asked for its health before any work starts.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rnnexp.errors import UserError

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(configured: str | None) -> str:
    """The store to log to: `configured`, else $MLFLOW_TRACKING_URI, else ./mlflow.db (absolute).

    A relative sqlite path is made absolute against the working directory, so that every job of
    a sweep, wherever it runs, writes to the same file.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme in ("", "file"):
        raise UserError(
            f"tracking_uri {uri!r} is an MLflow file store, which this MLflow no longer supports: "
            f"use sqlite:///{DEFAULT_DB} or an http:// tracking server."
        )
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :])
        uri = f"sqlite:///{(Path.cwd() / db).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str) -> None:
    """Fail now, in one sentence, if the store cannot be reached, rather than after hours of training."""
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise UserError(
            f"the MLflow store's folder {db.parent} does not exist: create it or choose another tracking_uri.")
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}): start it (mlflow server) "
                "or set tracking_uri / MLFLOW_TRACKING_URI to a reachable store."
            ) from None


def connect(uri: str) -> MlflowClient:
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if new; a sqlite store keeps artifacts in mlartifacts/ beside it."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        db = sqlite_path(client.tracking_uri)
        location = None
        if db is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            location = (db.parent / "mlartifacts" / slug).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise UserError(
            f"the MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) "
            "or choose another experiment_name."
        )
    return experiment.experiment_id
