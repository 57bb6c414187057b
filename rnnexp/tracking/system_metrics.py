"""The machine's CPU, memory, disk and network while a run trains: MLflow's `system/` metrics.

MLflow's own monitor (psutil underneath) samples every 10 s and logs to the run by id, so it needs
no fluent "active run". MLflow leaves it off by default; rnnexp turns it on, and
`MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false` (MLflow's own switch) turns it off again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING


def enabled() -> bool:
    return MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get() if MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.defined else True


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, resumed: bool) -> Iterator[None]:
    """Sample the machine into run `run_id` while the block runs; a resumed run continues its steps."""
    if not enabled():
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not two INFO lines per run
    monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
