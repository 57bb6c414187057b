"""MLflow tracking: which store runs go to, and one run's logging.

Everything goes through `MlflowClient` with explicit run ids (no fluent global "active run"), so
a process can own a sweep's parent run and a job's run at once. Metrics are buffered and sent with
`log_batch`, a few calls a minute, which keeps logging off the training loop's hot path.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_SOURCE_NAME
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH
from threadpoolctl import threadpool_info

from rnnexp.errors import UserError


DEFAULT_DB = "mlflow.db"
FAILURE_TAG = "failure_reason"
OVERRIDES_TAG = "overrides"
PACKAGE_DIR = Path(__file__).resolve().parent


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
    blas = [f"{lib['internal_api']} {lib['version']} ({lib['num_threads']} threads)" for lib in threadpool_info()
            if lib["user_api"] == "blas"]
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


class RunLogger:
    """One MLflow run: buffered metrics, params, tags and artifacts.

    Metrics are sent every `flush_every_s` seconds. A checkpoint keeps the ones still buffered
    (`pending`), so a run resumed from it can send them (`log_pending`); `already_logged` maps a
    metric to the last step the store holds, because a resumed run recomputes the steps between
    its checkpoint and the kill and must not log them twice.
    """

    def __init__(self, client: MlflowClient, run_id: str, already_logged: Mapping[str, int] | None = None,
                 flush_every_s: float = 15.0):
        self.client, self.run_id = client, run_id
        self.flush_every_s = flush_every_s
        self._already_logged = dict(already_logged or {})
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now_ms = int(time.time() * 1000)
        self._buffer += [
            Metric(key, float(value), now_ms, step)
            for key, value in metrics.items()
            if step > self._already_logged.get(key, -1)
        ]
        if len(self._buffer) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush > self.flush_every_s:
            self.flush()

    def pending(self) -> list[tuple[str, float, int]]:
        """The metrics not sent yet, as (key, value, step)."""
        return [(m.key, m.value, m.step) for m in self._buffer]

    def log_pending(self, pending: list[tuple[str, float, int]]) -> None:
        for key, value, step in pending:
            self.log_metrics({key: value}, step)

    def flush(self) -> None:
        for start in range(0, len(self._buffer), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=self._buffer[start : start + MAX_METRICS_PER_BATCH])
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_dataset(self, name: str, digest: str, source: str) -> None:
        """Record the data as the run's MLflow dataset input (shown in the UI's Datasets column)."""
        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=source)
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        try:
            self.client.log_inputs(self.run_id, inputs)
        except MlflowException:
            # Two sweep jobs registering the same dataset at once race in MLflow's sqlite store
            # (check, then insert); the loser's second try finds the row the winner wrote.
            self.client.log_inputs(self.run_id, inputs)

    def end(self, status: str, reason: str | None = None) -> None:
        """Flush what is buffered and close the run; a failure's reason becomes a tag."""
        try:
            self.flush()
        finally:
            if reason:
                self.client.set_tag(self.run_id, FAILURE_TAG, reason)
            self.client.set_terminated(self.run_id, status)


def create_run(client: MlflowClient, experiment: str, name: str | None, parent_run_id: str | None,
               tags: Mapping[str, str]) -> RunLogger:
    all_tags = dict(tags)
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id(client, experiment), run_name=name, tags=all_tags)
    return RunLogger(client, run.info.run_id)


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise UserError(
            f"no MLflow run {run_id!r} in the store {client.tracking_uri}: check the run id and tracking_uri."
        ) from None


def reopen_run(client: MlflowClient, run_id: str) -> RunLogger:
    """A logger for an existing run, that skips the metric steps the store already holds."""
    run = get_run(client, run_id)
    logged = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    client.update_run(run_id, status="RUNNING")
    return RunLogger(client, run_id, already_logged=logged)


@contextmanager
def run_status(run: RunLogger) -> Iterator[RunLogger]:
    """Close the run as FINISHED, FAILED with the reason, or KILLED on Ctrl-C, whatever happens inside."""
    try:
        yield run
    except KeyboardInterrupt as err:
        run.end("KILLED", str(err) or f"interrupted; continue from its last checkpoint with resume={run.run_id}")
        raise
    except UserError as err:
        run.end("FAILED", str(err))
        raise
    except BaseException as err:
        run.end("FAILED", f"internal error: {type(err).__name__}: {err}")
        raise
    run.end("FINISHED")


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
