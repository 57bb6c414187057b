"""A sweep's comparison of its children, logged on its parent run: a table, a plot.

Sweep jobs are ordered by their job number (the `sweep_job` tag); the comparison reads only what
the children logged, so it can be recomputed for any parent run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from rnnexp.tracking.figures import validation_curves
from rnnexp.tracking.logger import FAILURE_TAG, OVERRIDES_TAG, RunLogger
from rnnexp.tracking.tables import csv_table, markdown_table

JOB_TAG = "sweep_job"


def summarise(client: MlflowClient, parent: RunLogger) -> list[Run]:
    """Compare the parent's children on it (table and plot, also printed); return the children."""
    experiment = client.get_run(parent.run_id).info.experiment_id
    children = client.search_runs([experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}'")
    children.sort(key=lambda run: int(run.data.tags.get(JOB_TAG, 0)))
    curves = {run.info.run_id: client.get_metric_history(run.info.run_id, "val_ppl") for run in children}
    header, rows = comparison(children, {run_id: [m.value for m in history] for run_id, history in curves.items()})
    table = markdown_table(header, rows)
    print(f"\nsweep {parent.run_id}: {len(children)} runs\n{table}")
    parent.log_text(table, "comparison.md")
    parent.log_text(csv_table(header, rows), "comparison.csv")
    parent.log_figure(validation_curves(children, curves), "val_curves.png")
    return children


def swept_values(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, str]]]:
    """The override keys whose values differ between runs, and each run's values."""
    values = [dict(o.split("=", 1) for o in run.data.tags.get(OVERRIDES_TAG, "").split() if "=" in o)
              for run in runs]
    keys = sorted({key for v in values for key in v})
    return [key for key in keys if len({v.get(key) for v in values}) > 1], values


def comparison(runs: Sequence[Run], val_ppl: dict[str, list[float]]) -> tuple[list[str], list[list[str]]]:
    """One row per run: its swept values, status, best validation and test perplexity, tokens/s."""
    keys, values = swept_values(runs)
    header = ["job", *keys, "status", "best val ppl", "test ppl", "tokens/s", "run id", "failure"]
    rows = []
    for run, swept in zip(runs, values):
        metrics = run.data.metrics
        best = min(val_ppl[run.info.run_id], default=math.nan)
        rows.append([
            run.data.tags.get(JOB_TAG, "?"),
            *(swept.get(key, "") for key in keys),
            run.info.status,
            f"{best:.3f}",
            f"{metrics['test_ppl']:.3f}" if "test_ppl" in metrics else "",
            f"{metrics['tokens_per_sec']:.0f}" if "tokens_per_sec" in metrics else "",
            run.info.run_id,
            run.data.tags.get(FAILURE_TAG, ""),
        ])
    return header, rows
