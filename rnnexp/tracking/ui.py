"""The address `make ui` prints: an experiment's runs table in MLflow 3.17's UI, as a fresh browser sees it.

What MLflow 3.17.2's UI takes from outside the browser (read from its JavaScript bundle):
- `workflowType=machine_learning` in the query *inside* the hash: "Model training" instead of the GenAI
  overview. The experiment's `mlflow.experimentKind` tag is not read (a flag hard-coded to true skips it).
- A saved view: the experiment tag `mlflow.sharedViewState.<id>` opened by `viewStateShareKey=<id>`. It
  carries the sort and the table's columns, and is listed under "Views". The UI ignores it when the URL
  also holds a sort or a filter, so the sort travels inside the view.
- Not the rows a sweep expands (the UI drops `runsExpanded` from a shared view), nor the Assistant panel
  (per-browser localStorage): each needs a click.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from mlflow import MlflowClient
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from rnnexp.tracking.store import sqlite_path

WORKFLOW = {"workflowType": "machine_learning"}
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "rnnexp-runs"
VIEW_NAME = "rnnexp: best validation perplexity first"
SORT = {"orderByKey": "metrics.`best_val_ppl`", "orderByAsc": True}
COLUMNS = [
    "metrics.`best_val_ppl`",
    "metrics.`test_ppl`",
    "metrics.`tokens_per_sec_mean`",
    "params.`model.cell`",
    "params.`model.hidden_dim`",
    "params.`optim.lr`",
]
NO_RUNS = "no runs yet: make run first"


def view_state() -> dict[str, object]:
    """The saved view's state, in the keys the UI reads: the sort and the table's columns."""
    return {**SORT, "selectedColumns": COLUMNS}


def save_runs_view(client: MlflowClient, experiment: Experiment) -> bool:
    """Store the runs view on the experiment unless it holds this state already (its date then stays).

    False when the store refuses the write (a read-only store, a server that forbids it).
    """
    key = VIEW_TAG_PREFIX + VIEW_ID
    state = view_state()
    try:
        if json.loads(json.loads(experiment.tags[key])["state"]) == state:
            return True
    except (KeyError, ValueError, TypeError):
        pass  # absent, or written by another version: replaced
    now = int(time.time() * 1000)
    envelope = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    try:
        client.set_experiment_tag(experiment.experiment_id, key, json.dumps(envelope))
    except MlflowException:
        return False
    return True


def runs_table_url(base_url: str, experiment_id: str, with_view: bool) -> str:
    """The runs table of an experiment under "Model training", through the saved view or, without it,
    sorted by best_val_ppl from the URL alone."""
    query = {**WORKFLOW, "viewStateShareKey": VIEW_ID} if with_view else {**WORKFLOW, **SORT}
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?" + urlencode(
        {key: str(value).lower() if isinstance(value, bool) else value for key, value in query.items()}
    )


def ui_url(tracking_uri: str, experiment_name: str, base_url: str) -> tuple[str, str | None]:
    """The URL to open, and why it is only the UI's home page when there is nothing to show yet.

    Reads the store and writes the saved view onto the experiment; never creates a store.
    """
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        return base_url, NO_RUNS
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage != "active":
        return base_url, NO_RUNS
    with_view = save_runs_view(client, experiment)
    return runs_table_url(base_url, experiment.experiment_id, with_view), None
