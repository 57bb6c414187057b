"""One MLflow run's logging: buffered metrics, params, tags, artifacts, and its final status.

Everything goes through `MlflowClient` with explicit run ids (no fluent global "active run"), so
a process can own a sweep's parent run and a job's run at once. Metrics are buffered and sent with
`log_batch`, a few calls a minute, which keeps logging off the training loop's hot path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from rnnexp.errors import UserError
from rnnexp.tracking.store import experiment_id

FAILURE_TAG = "failure_reason"
OVERRIDES_TAG = "overrides"


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
