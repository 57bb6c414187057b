"""The Hydra callback that conf/config.yaml names: a sweep's parent run and joblib's workers, loaded
only when a multirun starts (ARCHITECTURE.md, "Import time")."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


class SweepCallback(Callback):
    """Hands a multirun's start and end to `rnnexp.tracking.sweep.SweepParent`, made when the multirun starts."""

    def __init__(self) -> None:
        self._sweep: Callback | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        warming = start_joblib_workers(config)
        from rnnexp.tracking.sweep import SweepParent

        self._sweep = SweepParent()
        self._sweep.on_multirun_start(config, **kwargs)
        if warming is not None:
            warming.join()  # the launcher's own Parallel must not race the warm-up's for the executor

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._sweep is not None:
            self._sweep.on_multirun_end(config, **kwargs)


def joblib_settings(config: DictConfig) -> dict[str, Any] | None:
    """The keyword arguments the joblib launcher will give `joblib.Parallel`; None under another launcher."""
    launcher = config.hydra.launcher
    if launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    container = OmegaConf.to_container(launcher, resolve=True)
    assert isinstance(container, dict)
    settings = {str(key): value for key, value in container.items() if key != "_target_"}
    settings["backend"] = "loky"  # as the launcher sets it
    process_joblib_cfg(settings)
    return settings


def start_joblib_workers(config: DictConfig) -> threading.Thread | None:
    """Start the joblib launcher's workers in a thread, each importing what a job needs; None under another launcher.

    The launcher then finds them ready, since joblib reuses an executor made with the same settings.
    A failure here only costs the head start: the launcher starts its workers itself and reports
    what stops them.
    """
    settings = joblib_settings(config)
    if settings is None:
        return None

    tracking_uri = config.tracking_uri

    def warm() -> None:
        try:
            warm_joblib_workers(settings, tracking_uri)
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.debug("the joblib workers could not be started early: %s", err)

    thread = threading.Thread(target=warm, name="rnnexp-joblib-warm-up", daemon=True)
    thread.start()
    return thread


def warm_joblib_workers(settings: dict[str, Any], tracking_uri: str | None) -> list[int]:
    """Start joblib's workers for these `Parallel` settings and prepare each for its first job; returns their pids."""
    from joblib import Parallel, delayed, effective_n_jobs

    workers = effective_n_jobs(settings["n_jobs"])
    return Parallel(**settings)(delayed(prepare_worker)(tracking_uri) for _ in range(workers))


def prepare_worker(tracking_uri: str | None) -> int:
    """In a joblib worker: import the trainer and MLflow now, before its first job; returns the worker's pid.

    MLflow's database store is most of the time a first connection takes (0.6 of 0.7 s); importing
    it here needs no store lock, so the workers' first jobs then hold the lock only briefly.
    """
    import rnnexp.run  # noqa: F401
    import rnnexp.tracking.jobs  # noqa: F401

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri.startswith(("http://", "https://")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    return os.getpid()
