"""The tracking layer: MLflow stores, runs, sweeps and trained models; it drives `rnnexp.training`.

`train(cfg)` trains one run into MLflow. The store (`store`), the experiment (`experiment`), a run's
opening and closing (`lifecycle`), its logging (`logger`) and owner (`owner`), what a run is
described by (`params`), sweeps (`sweep`, and their jobs: `jobs`) and models back from runs
(`trained`) each have their own module; the names studies use most are re-exported here.
"""

from rnnexp.tracking.experiment import experiment_id
from rnnexp.tracking.lifecycle import create_run, get_run, reopen_run, run_status
from rnnexp.tracking.logger import FAILURE_TAG, OVERRIDES_TAG, RunLogger
from rnnexp.tracking.params import environment_tags, flat_params, git_state
from rnnexp.tracking.session import train
from rnnexp.tracking.store import connect, resolve_tracking_uri

__all__ = [
    "FAILURE_TAG",
    "OVERRIDES_TAG",
    "RunLogger",
    "connect",
    "create_run",
    "environment_tags",
    "experiment_id",
    "flat_params",
    "get_run",
    "git_state",
    "reopen_run",
    "resolve_tracking_uri",
    "run_status",
    "train",
]
