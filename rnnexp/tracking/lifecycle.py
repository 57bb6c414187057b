"""A run's life in the store: created or reopened by this process, then closed FINISHED, FAILED with
its reason, or KILLED, whatever ends it (`run_status`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities import Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from rnnexp.errors import UserError
from rnnexp.tracking.experiment import experiment_id
from rnnexp.tracking.logger import FAILURE_TAG, RunLogger
from rnnexp.tracking.owner import is_alive, owned_here, owner, owner_tags
from rnnexp.tracking.store import store_fault

log = logging.getLogger(__name__)


def create_run(
    client: MlflowClient, experiment: str, name: str | None, parent_run_id: str | None, tags: Mapping[str, str]
) -> RunLogger:
    all_tags = dict(tags)
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id(client, experiment), run_name=name, tags={**all_tags, **owner_tags()})
    return _started(RunLogger(client, run.info.run_id))


def _started(run: RunLogger) -> RunLogger:
    """A run whose artifacts can be written, with its heartbeat going; else FAILED with the reason."""
    try:
        run.check_artifacts_writable()
    except UserError as err:
        run.end("FAILED", str(err))
        raise
    run.start_heartbeat()
    return run


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise UserError(
            f"no MLflow run {run_id!r} in the store {client.tracking_uri}: check the run id and tracking_uri."
        ) from None


def reopen_run(client: MlflowClient, run_id: str) -> RunLogger:
    """A logger for an existing run, that skips the metric steps the store already holds.

    A run whose process still runs is refused: both would log into it. The reopened run is this
    process's, RUNNING, without the failure reason of its last end.
    """
    run = get_run(client, run_id)
    if is_alive(run) and not owned_here(run):
        raise UserError(
            f"run {run_id} is still running ({owner(run)}): stop that process first (Ctrl-C, or kill its "
            "pid), since two processes logging into one run would duplicate its metrics."
        )
    logged = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    client.update_run(run_id, status="RUNNING")
    if FAILURE_TAG in run.data.tags:
        with contextlib.suppress(MlflowException):  # gone already: another resume of it got there first
            client.delete_tag(run_id, FAILURE_TAG)
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in owner_tags().items()])
    return _started(RunLogger(client, run_id, already_logged=logged))


@contextmanager
def run_status(run: RunLogger) -> Iterator[RunLogger]:
    """Close the run as FINISHED, FAILED with the reason, or KILLED on Ctrl-C, whatever happens inside."""
    try:
        yield run
    except KeyboardInterrupt as err:
        end_after_failure(
            run, "KILLED", str(err) or f"interrupted; continue from its last checkpoint with resume={run.run_id}"
        )
        raise
    except UserError as err:
        end_after_failure(run, "FAILED", str(err))
        raise
    except BaseException as err:
        cause = store_fault(err)
        if cause is None:
            end_after_failure(run, "FAILED", f"internal error: {type(err).__name__}: {err}")
            raise
        reason = store_fault_message(run.run_id, cause)
        end_after_failure(run, "FAILED", reason)
        raise UserError(reason) from None
    try:
        run.end("FINISHED")
    except MlflowException as err:
        cause = store_fault(err)
        if cause is None:
            raise
        raise UserError(store_fault_message(run.run_id, cause)) from None


def store_fault_message(run_id: str, cause: str) -> str:
    return (
        f"the MLflow store stopped recording run {run_id} ({cause}): fix that, then resume={run_id} continues "
        "it from its last checkpoint."
    )


def end_after_failure(run: RunLogger, status: str, reason: str) -> None:
    """Close a run that failed; a store that cannot record even that is said in one log line, so that
    the failure's own sentence stays the one the user reads (`python -m rnnexp.repair` lists the run)."""
    try:
        run.end(status, reason)
    except UserError:  # the server went away: that sentence says where the run stands
        raise
    except Exception as err:  # noqa: BLE001 - whatever the store raised, the failure's own sentence goes first
        log.warning(
            "could not mark run %s %s in the MLflow store (%s)",
            run.run_id,
            status,
            store_fault(err) or type(err).__name__,
        )
