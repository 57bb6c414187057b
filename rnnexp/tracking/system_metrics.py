"""The machine's CPU, memory, disk and network while a run trains: MLflow's `system/` metrics.

MLflow's own monitor (psutil underneath) samples every 10 s and logs to the run by id, so it needs
no fluent "active run". MLflow leaves it off by default; rnnexp turns it on, and
`MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false` (MLflow's own switch) turns it off again. The monitor
logs nothing for a run shorter than its interval, so one more sample is logged as the run ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

if TYPE_CHECKING:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor


def enabled() -> bool:
    return MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get() if MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.defined else True


@contextmanager
def system_metrics(
    tracking_uri: str, run_id: str, resumed: bool, store_away: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Sample the machine into run `run_id` while the block runs; a resumed run continues its steps.

    The final sample is skipped where the monitor already stopped on a failure, or the store is away
    (`store_away`), since a request to a dead server may take a minute.
    """
    if not enabled():
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not two INFO lines per run
    monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri)
    first_step = monitor._logging_step
    monitor.start()
    try:
        yield
    finally:
        sampling = monitor._process is not None and monitor._process.is_alive()
        monitor.finish()
        if sampling and not store_away():
            log_final_sample(monitor, first_step)


def log_final_sample(monitor: SystemMetricsMonitor, first_step: int) -> None:
    """Log the machine as the run ends, at the monitor's next step; a store that fails here fails quietly."""
    try:
        if monitor._logging_step == first_step:
            # Nothing logged yet, so the one pending sample is the start's, whose CPU share is psutil's
            # placeholder 0.0: drop it and measure the CPU from it to now instead.
            for part in monitor.monitors:
                part.clear_metrics()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as err:  # system metrics are a courtesy: they never fail a run
        logging.getLogger("mlflow.system_metrics").warning("could not log the final system metrics: %s", err)
