"""Hydra multiruns as MLflow sweeps: one parent run, a child per job, a comparison at the end.

The launching process creates the parent run before any job starts and binds the jobs to it by
its id: in the environment every launcher hands its jobs (joblib workers, submitit and SLURM
jobs), and in `mlflow_parent.json` in the sweep directory, which a `${sweep_id:}` in its name
keeps apart from any other launch, even one started in the same second from the same folder.

A sweep stops as a whole: Ctrl-C or SIGTERM (to the launcher or to a job) leaves a STOP file in
the sweep directory; running jobs checkpoint and end KILLED, jobs not started yet do not start,
and the parent ends KILLED with the command that finishes the sweep: `resume=<parent run id>`
runs again only the jobs without a FINISHED run, each interrupted one from its checkpoint, and
writes the comparison. What each job does is tracking.jobs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from rnnexp import cli
from rnnexp.errors import UserError
from rnnexp.tracking.comparison import JOB_TAG, summarise
from rnnexp.tracking.describe import readable_name
from rnnexp.tracking.lifecycle import create_run, get_run, reopen_run
from rnnexp.tracking.logger import OVERRIDES_TAG, RunLogger
from rnnexp.tracking.owner import is_alive, owner
from rnnexp.tracking.params import environment_tags
from rnnexp.tracking.store import connect, resolve_tracking_uri

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
FAILED_DIR = "failed_jobs"  # a job that fails before its MLflow run exists leaves its reason here
STOP_FILE = "STOP"  # the sweep was interrupted: jobs stop at their next step, and none starts
SWEEP_ENV = "RNNEXP_SWEEP"  # the launcher's parent run, as JSON, inherited by every job
ARGS_TAG = "sweep_args"  # the sweep's task and hydra overrides (JSON), what resume= launches again

# A name part that no other launch shares, resolved once in the launcher: Hydra copies resolver
# caches into each job's config, so every job sees the launcher's value.
OmegaConf.register_new_resolver("sweep_id", lambda: uuid.uuid4().hex[:8], use_cache=True, replace=True)


def request_stop(sweep_dir: Path, reason: str) -> None:
    """Stop the whole sweep: each job stops at its next step (tracking.jobs.watch_stop), none starts."""
    (sweep_dir / STOP_FILE).write_text(reason)


class SweepParent(Callback):
    """Opens the parent run when a multirun starts; compares the children when it ends.

    Hydra turns a callback's exceptions into warnings and carries on, so a UserError here ends
    the process itself (one line, exit status 2): before any job when the store is unreachable,
    after the comparison when jobs failed. A parent still open when the process exits (an
    exception, a second Ctrl-C) is closed KILLED with the command that finishes the sweep.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_run_id: str | None = None
        self.parent: RunLogger | None = None
        self.sweep_dir: Path | None = None
        self._closed = False

    @property
    def _store(self) -> MlflowClient:
        assert self.client is not None, "the store is opened when the multirun starts"
        return self.client

    @property
    def _parent(self) -> RunLogger:
        assert self.parent is not None, "the parent run is opened when the multirun starts"
        return self.parent

    @property
    def _dir(self) -> Path:
        assert self.sweep_dir is not None, "the sweep directory is made when the multirun starts"
        return self.sweep_dir

    def __getstate__(self) -> dict:
        """Launchers pickle the callbacks with each job (joblib): the job needs none of the launcher's state."""
        return {**self.__dict__, "client": None, "parent": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._open_parent(config)
        except UserError as err:
            if self.parent is not None:
                self._close("FAILED", str(err))
            cli.exit_with(err)
        except OSError as err:  # the sweep directory cannot be written
            reason = (
                f"cannot write the sweep directory {config.hydra.sweep.dir} ({err.strerror or err}): run from "
                "a writable folder or set hydra.sweep.dir to one."
            )
            if self.parent is not None:
                self._close("FAILED", reason)
            cli.exit_with(UserError(reason))
        except Exception as err:  # Hydra would turn it into a warning and run the jobs without their parent
            if self.parent is not None:
                self._close("FAILED", f"internal error: {type(err).__name__}: {err}")
            log.exception("the sweep could not start")
            cli.exit_with(UserError(f"the sweep could not start ({type(err).__name__}: {str(err)[:300]}); no job ran."))
        atexit.register(self._close, "KILLED", self._resume_hint("the sweep's process ended before its jobs"))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        stop = self._dir / STOP_FILE
        if stop.exists():
            reason = self._resume_hint(stop.read_text().strip() or "the sweep was interrupted")
            self._close("KILLED", reason)
            print(f"interrupted: {reason}", file=sys.stderr)
            sys.exit(cli.INTERRUPTED_EXIT)
        self._parent.stop_heartbeat()
        try:
            self._compare_children()
        except UserError as err:
            self._closed = True
            cli.exit_with(err)
        except Exception as err:
            self._close("FAILED", f"internal error while comparing the jobs: {type(err).__name__}: {err}")
            raise
        self._closed = True

    def _resume_hint(self, what: str) -> str:
        return (
            f"{what}: python -m rnnexp.run resume={self.parent_run_id} runs its unfinished jobs, from their "
            "checkpoints, and compares them."
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        """First signal: the sweep stops after each running job's current step. Second: at once."""
        stop = self._dir / STOP_FILE
        if stop.exists():
            raise KeyboardInterrupt(self._resume_hint("the sweep was stopped at once"))
        request_stop(self._dir, f"the sweep was stopped by signal {signum}")
        log.warning(
            "stopping the sweep: running jobs checkpoint and stop, no other starts; signal again to stop at once"
        )

    def _close(self, status: str, reason: str) -> None:
        if not self._closed and self.parent is not None:
            self._closed = True
            try:
                self.parent.end(status, reason)
            except Exception as err:  # noqa: BLE001 - at exit; `python -m rnnexp.repair` finds a parent left open
                log.warning("could not close the sweep's parent run %s: %s", self.parent_run_id, err)

    def _open_parent(self, config: DictConfig) -> None:
        self.client = connect(resolve_tracking_uri(config.tracking_uri), writing=True)
        task = list(config.hydra.overrides.task)
        sweep = " ".join(o for o in task if o.split("=", 1)[0] != "resume")
        if config.get("resume"):
            parent = self._reopen_parent(config.resume)
        else:
            args = json.dumps({"task": task, "hydra": list(config.hydra.overrides.hydra)})
            name = f"sweep {readable_name([o for o in task if o.split('=', 1)[0] != 'resume'], None)}"
            parent = create_run(
                self.client,
                config.experiment_name,
                name,
                None,
                {"sweep": "true", OVERRIDES_TAG: sweep, ARGS_TAG: args, **environment_tags()},
            )
        self.parent, self.parent_run_id = parent, parent.run_id
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.sweep_dir = sweep_dir
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._claim(sweep_dir / PARENT_FILE)
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)
        overrides = OverridesParser.create().parse_overrides([o for o in task if o.split("=", 1)[0] != "resume"])
        swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
        common = sorted({o.key_or_group for o in overrides} - swept)  # what every job shares
        info = {"parent_run_id": parent.run_id, "common_keys": common, "resuming": bool(config.get("resume"))}
        (sweep_dir / PARENT_FILE).write_text(json.dumps(info))
        os.environ[SWEEP_ENV] = json.dumps(info)
        parent.set_tags({"sweep_dir": str(sweep_dir)})
        log.info("sweep: MLflow parent run %s in %s", parent.run_id, self.client.tracking_uri)

    def _reopen_parent(self, run_id: str) -> RunLogger:
        run = get_run(self._store, run_id)
        if run.data.tags.get("sweep") != "true":
            raise UserError(f"run {run_id} is not a sweep's parent run: resume a single run without -m.")
        if run.info.status == "FINISHED" and not run.data.tags.get("failure_reason"):
            raise UserError(f"sweep {run_id} has finished: there is nothing to resume; start a new sweep instead.")
        return reopen_run(self._store, run_id)

    def _claim(self, parent_file: Path) -> None:
        """Refuse a sweep directory that a live sweep of another parent uses (a fixed hydra.sweep.dir)."""
        if not parent_file.is_file():
            return
        other = json.loads(parent_file.read_text()).get("parent_run_id")
        if other and other != self.parent_run_id:
            try:
                run = self._store.get_run(other)
            except MlflowException:  # a sweep of another store: not this store's business
                return
            if is_alive(run):
                raise UserError(
                    f"the sweep directory {parent_file.parent} belongs to sweep {other}, still running "
                    f"({owner(run)}): give this sweep its own hydra.sweep.dir."
                )

    def _compare_children(self) -> None:
        parent = RunLogger(self._store, self._parent.run_id)
        children = summarise(self._store, parent)
        failed = [run.info.run_name for run in children if run.info.status != "FINISHED"]
        with_runs = {run.data.tags.get(JOB_TAG) for run in children}
        failures = sorted((self._dir / FAILED_DIR).glob("*.txt"))
        failed += [path.read_text() for path in failures if path.stem not in with_runs]  # no run to show
        jobs = len(with_runs | {path.stem for path in failures})
        parent.end(
            "FINISHED" if len(failed) < jobs else "FAILED", f"{len(failed)} of {jobs} jobs failed" if failed else None
        )
        if failed:
            raise UserError(
                f"{len(failed)} of {jobs} sweep jobs failed ({'; '.join(failed)}): "
                f"see the failure column of the table above, or parent run {self.parent_run_id} in MLflow."
            )
