"""One MLflow run's logging: buffered metrics, params, tags, artifacts, its heartbeat and its end.

Everything goes through `MlflowClient` with explicit run ids (no fluent global "active run"), so
a process can own a sweep's parent run and a job's run at once. Metrics are buffered and sent with
`log_batch`, a few calls a minute, which keeps logging off the training loop's hot path.

A tracking server that stops answering never stops training: requests fail within seconds
(store.HTTP_DEFAULTS), one warning line says so, metrics stay buffered (and in every checkpoint)
and artifacts wait in a local spool folder, and all of it is sent when the server answers again.

Opening and closing a run is tracking.lifecycle; who owns it (the heartbeat's tag) is tracking.owner.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from rnnexp.errors import UserError
from rnnexp.tracking.owner import HEARTBEAT_EVERY_S, HEARTBEAT_TAG
from rnnexp.tracking.store import answers, server_unreachable

FAILURE_TAG = "failure_reason"
OVERRIDES_TAG = "overrides"
RETRY_EVERY_S = 5.0  # while the server is away: seconds between health checks
FINAL_WAIT_S = 15.0  # at the end of a run: how long to wait for a server that is away
# A request to a tracking server still unanswered after this long is said at once: a frozen server
# holds it for MLFLOW_HTTP_REQUEST_TIMEOUT (20 s) times three tries before it counts as away.
SLOW_REQUEST_S = 10.0

log = logging.getLogger(__name__)


class RunLogger:
    """One MLflow run: buffered metrics, params, tags and artifacts.

    Metrics are sent every `flush_every_s` seconds. A checkpoint keeps the ones still buffered
    (`pending`), so a run resumed from it can send them (`log_pending`); `already_logged` maps a
    metric to the last step the store holds, because a resumed run recomputes the steps between
    its checkpoint and the kill and must not log them twice.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        already_logged: Mapping[str, int] | None = None,
        flush_every_s: float = 15.0,
    ):
        self.client, self.run_id = client, run_id
        self.flush_every_s = flush_every_s
        self._already_logged = dict(already_logged or {})
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._remote = client.tracking_uri.startswith(("http://", "https://"))
        if self._remote:  # one warning line of ours, not one of urllib3's per retry
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        self._away_since: float | None = None  # wall time the server stopped answering
        self._last_try = 0.0
        self._deferred: dict[str, Callable[[], object]] = {}  # what waits for the server, by destination
        self._spool: Path | None = None  # local copies of texts and figures that wait
        self._heartbeat: threading.Event | None = None

    # ------------------------------------------------------------------ metrics
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
        """Send the buffered metrics and whatever waited for the server; while it is away, try again
        at most every RETRY_EVERY_S seconds, so that training never waits on it for long."""
        self._last_flush = time.monotonic()
        if self._away_since is not None:
            if time.monotonic() - self._last_try < RETRY_EVERY_S:
                return
            self._last_try = time.monotonic()
            if not answers(self.client.tracking_uri):  # a second at most, where a request may take a minute
                return
        try:
            with self._watchdog():
                self._send_buffered()
        except MlflowException as err:
            if not (self._remote and server_unreachable(err)):
                raise
            self._went_away(err)
            return
        if self._away_since is not None:
            log.warning(
                "the tracking server at %s answers again: sent what waited since %s",
                self.client.tracking_uri,
                time.strftime("%H:%M:%S", time.localtime(self._away_since)),
            )
            self._away_since = None

    def _send_buffered(self) -> None:
        while self._buffer:
            self.client.log_batch(self.run_id, metrics=self._buffer[:MAX_METRICS_PER_BATCH])
            del self._buffer[:MAX_METRICS_PER_BATCH]  # sent: a re-send after a failure would be a duplicate
        for destination in list(self._deferred):
            self._deferred[destination]()
            del self._deferred[destination]

    @contextmanager
    def _watchdog(self) -> Iterator[None]:
        """Say in one line, while it waits, that the tracking server has not answered for SLOW_REQUEST_S."""
        if not self._remote:
            yield
            return
        timer = threading.Timer(
            SLOW_REQUEST_S,
            log.warning,
            (
                "the tracking server at %s has not answered for %.0f s: training waits for it up to about a "
                "minute, then goes on and keeps the metrics until it answers",
                self.client.tracking_uri,
                SLOW_REQUEST_S,
            ),
        )
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    @property
    def server_away(self) -> bool:
        return self._away_since is not None

    def _went_away(self, err: BaseException) -> None:
        self._last_try = time.monotonic()
        if self._away_since is None:
            self._away_since = time.time()
            errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err))
            reason = errno.group(1).strip() if errno else "no answer in time"
            log.warning(
                "the tracking server at %s stopped answering (%s): training goes on; metrics are kept, also in "
                "each checkpoint, and sent when it answers again",
                self.client.tracking_uri,
                reason,
            )
            # MLflow's system-metrics monitor stops at its first failure and says so in two more lines.
            logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)

    def deferrable(self, destination: str, call: Callable[[], object]) -> None:
        """Make `call` (a few calls to the store) now, or, while the server is away, when it answers again;
        a later call for the same destination replaces one that waits."""
        self._send(destination, call)

    def _send(self, destination: str, call: Callable[[], object]) -> None:
        """Make a call to the store now, or, while the server is away, when it answers again."""
        if self._away_since is not None:
            self._deferred[destination] = call
            self.flush()
            return
        try:
            with self._watchdog():
                call()
        except MlflowException as err:
            if not (self._remote and server_unreachable(err)):
                raise
            self._went_away(err)
            self._deferred[destination] = call
        except OSError as err:  # a local artifact store: a read-only, full or vanished folder
            raise UserError(
                f"cannot write the run's artifacts to {self.artifact_folder()} ({err.strerror or err}): "
                "make that folder writable or free space there, then continue with "
                f"resume={self.run_id}."
            ) from None

    def _spooled(self, artifact_file: str) -> Path:
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix=f"rnnexp-{self.run_id}-"))
        path = self._spool / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ params, tags, artifacts
    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            self._send(f"params {start}", functools.partial(self.client.log_batch, self.run_id, params=chunk))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            self._send(
                f"tags {','.join(t.key for t in chunk)}",
                functools.partial(self.client.log_batch, self.run_id, tags=chunk),
            )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file; one that waits for the server is sent as it is then (a checkpoint's latest state)."""
        self._send(
            f"artifact {artifact_path}/{Path(path).name}",
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        if self._away_since is None:
            self._send(f"artifact {artifact_file}", lambda: self.client.log_text(self.run_id, text, artifact_file))
        if self._away_since is not None:
            local = self._spooled(artifact_file)
            local.write_text(text)
            self._defer_file(local, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        if self._away_since is None:
            self._send(f"artifact {artifact_file}", lambda: self.client.log_figure(self.run_id, figure, artifact_file))
        if self._away_since is not None:
            local = self._spooled(artifact_file)
            figure.savefig(local)
            self._defer_file(local, artifact_file)

    def _defer_file(self, local: Path, artifact_file: str) -> None:
        folder = str(Path(artifact_file).parent)
        self._deferred[f"artifact {artifact_file}"] = lambda: self.client.log_artifact(
            self.run_id, str(local), None if folder == "." else folder
        )

    def artifact_folder(self) -> str:
        uri = self.client.get_run(self.run_id).info.artifact_uri
        return unquote(urlparse(uri).path) if uri.startswith("file:") else uri

    def check_artifacts_writable(self) -> None:
        """For artifacts in a local folder: fail now, in one sentence, rather than at the first epoch's end."""
        uri = self.client.get_run(self.run_id).info.artifact_uri or ""
        if not uri.startswith("file:"):
            return
        folder = Path(self.artifact_folder())
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
                pass
        except OSError as err:
            raise UserError(
                f"cannot write the run's artifacts to {folder} ({err.strerror or err}): make that folder "
                "writable or free space there, or log to another tracking_uri."
            ) from None

    # ------------------------------------------------------------------ owner
    def start_heartbeat(self, every_s: float = HEARTBEAT_EVERY_S) -> None:
        """Refresh the heartbeat tag from a background thread until the run ends (failures are ignored:
        a server that is away is the flush's business)."""
        stop = self._heartbeat = threading.Event()
        client, run_id = self.client, self.run_id

        def beat() -> None:
            while not stop.wait(every_s):
                try:
                    client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
                except Exception:  # noqa: BLE001 - a missed beat is harmless; the next one may pass
                    pass

        threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True).start()

    def log_dataset(
        self, name: str, digest: str, source: str, context: str = "training", profile: str | None = None
    ) -> None:
        """Record data as one of the run's MLflow dataset inputs (the UI's Datasets column), used for
        `context` (training, validation or testing)."""
        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=source, profile=profile)
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        try:
            self.client.log_inputs(self.run_id, inputs)
        except MlflowException:
            # Two sweep jobs registering the same dataset at once race in MLflow's sqlite store
            # (check, then insert); the loser's second try finds the row the winner wrote.
            self.client.log_inputs(self.run_id, inputs)

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()

    def end(self, status: str, reason: str | None = None) -> None:
        """Flush what is buffered and close the run; a failure's reason becomes a tag.

        A server that is away gets FINAL_WAIT_S seconds to answer; after that the run stays RUNNING
        there, its last checkpoint holds what was not sent, and the error says how to finish it.
        """
        self.stop_heartbeat()
        deadline = time.monotonic() + FINAL_WAIT_S
        try:
            self.flush()
            while self._away_since is not None and time.monotonic() < deadline:
                time.sleep(min(RETRY_EVERY_S, max(deadline - time.monotonic(), 0)) / 2)
                self._last_try = 0.0
                self.flush()
            if self._away_since is not None:
                since = time.strftime("%H:%M:%S", time.localtime(self._away_since))
                raise UserError(
                    f"the tracking server at {self.client.tracking_uri} has not answered since {since}: run "
                    f"{self.run_id} ended {status} here but still shows RUNNING there, and its last checkpoint holds "
                    f"the metrics not sent; when the server is back, resume={self.run_id} sends them and closes it."
                )
        finally:
            if self._away_since is None:
                if reason:
                    self.client.set_tag(self.run_id, FAILURE_TAG, reason)
                self.client.set_terminated(self.run_id, status)
            if self._spool is not None:
                shutil.rmtree(self._spool, ignore_errors=True)
