"""A sweep's parent run that summarises its children: description, params, metrics, table and plot.

When a sweep ends, its parent run gets
- a description (the UI's Overview) that renders the comparison: one row per child, linked to it,
  best validation perplexity first;
- params: the config every child shares, plus each swept axis with its values (`optim.lr` = `2, 1000`);
- metrics: the best child's `best_val_ppl` and `test_ppl`, and that child's id as the tag `best_run_id`;
- the same table as artifacts (`comparison.md`, `comparison.csv`) and the validation curves (`val_curves.png`).

Everything is read back from what the children logged, so any sweep's parent, an old one included,
can be summarised again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from rnnexp.tracking.figures import validation_curves
from rnnexp.tracking.logger import FAILURE_TAG, OVERRIDES_TAG, RunLogger
from rnnexp.tracking.tables import csv_table, markdown_table

JOB_TAG = "sweep_job"
SWEEP_TAG = "sweep"  # "true" on a sweep's parent run
BEST_RUN_TAG = "best_run_id"
RESULT_COLUMNS = ("status", "best val ppl", "test ppl", "tokens/s")
LISTED_VALUES = 12  # a swept axis with more values (an Optuna search) is logged as its range


def is_sweep_parent(run: Run) -> bool:
    return run.data.tags.get(SWEEP_TAG) == "true"


def children(client: MlflowClient, parent: Run) -> list[Run]:
    """The parent's child runs, in job order."""
    found: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'", page_token=token
        )
        found += page
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda run: int(run.data.tags.get(JOB_TAG, 0)))


def best_val_ppl(run: Run, curve: Sequence[float] = ()) -> float:
    """The run's best validation perplexity: its `best_val_ppl`, else the least of its curve (older runs)."""
    if "best_val_ppl" in run.data.metrics:
        return run.data.metrics["best_val_ppl"]
    return min(curve, default=math.nan)


def best(runs: Sequence[Run], curves: Mapping[str, Sequence[float]] | None = None) -> Run | None:
    """The finished run with the lowest best validation perplexity; None if none finished."""
    scored = [
        (best_val_ppl(run, (curves or {}).get(run.info.run_id, ())), run)
        for run in runs
        if run.info.status == "FINISHED"
    ]
    scored = [(ppl, run) for ppl, run in scored if math.isfinite(ppl)]
    return min(scored, key=lambda pair: pair[0])[1] if scored else None


def ranked(runs: Sequence[Run], curves: Mapping[str, Sequence[float]]) -> list[Run]:
    """Best first: finished runs by best validation perplexity, then the others in job order."""

    def key(run: Run) -> tuple[bool, float]:
        ppl = best_val_ppl(run, curves.get(run.info.run_id, ()))
        finished = run.info.status == "FINISHED" and math.isfinite(ppl)
        return (not finished, ppl if finished else 0.0)

    return sorted(runs, key=key)


def swept_values(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, str]]]:
    """The swept axes (overrides whose values differ between runs), and each run's values."""
    values = [
        {
            key: value
            for key, value in (o.split("=", 1) for o in run.data.tags.get(OVERRIDES_TAG, "").split() if "=" in o)
        }
        for run in runs
    ]
    keys = sorted({key for v in values for key in v})
    return [key for key in keys if len({v.get(key) for v in values}) > 1], values


def comparison(runs: Sequence[Run], val_ppl: Mapping[str, Sequence[float]]) -> tuple[list[str], list[list[str]]]:
    """One row per run, best first: its swept values, status, best validation and test perplexity,
    average tokens/s over the run."""
    keys, values = swept_values(runs)
    swept = {run.info.run_id: v for run, v in zip(runs, values)}
    header = ["job", "run", *keys, *RESULT_COLUMNS, "run id", "failure"]
    rows = [
        [
            run.data.tags.get(JOB_TAG, "?"),
            run.info.run_name,
            *cells(run, keys, swept, val_ppl),
            run.info.run_id,
            run.data.tags.get(FAILURE_TAG, ""),
        ]
        for run in ranked(runs, val_ppl)
    ]
    return header, rows


def cells(
    run: Run, keys: Sequence[str], swept: Mapping[str, Mapping[str, str]], val_ppl: Mapping[str, Sequence[float]]
) -> list[str]:
    """A run's swept values and results, as table cells."""
    metrics = run.data.metrics
    return [
        *(swept[run.info.run_id].get(key, "") for key in keys),
        run.info.status,
        f"{best_val_ppl(run, val_ppl.get(run.info.run_id, ())):.3f}",
        f"{metrics['test_ppl']:.3f}" if "test_ppl" in metrics else "",
        f"{metrics['tokens_per_sec_mean']:.0f}" if "tokens_per_sec_mean" in metrics else "",
    ]


def sweep_params(runs: Sequence[Run]) -> dict[str, str]:
    """The parent's params: every param the children share, and each swept axis with its values."""
    described = [run.data.params for run in runs if run.data.params]
    shared = dict(described[0]) if described else {}
    for params in described[1:]:
        shared = {key: value for key, value in shared.items() if params.get(key) == value}
    keys, values = swept_values(runs)
    for key in keys:
        shared.pop(key, None)
        shared[key] = axis_values([v[key] for v in values if key in v])
    return shared


def axis_values(values: Sequence[str]) -> str:
    """An axis's values in job order, once each (`8, 16`); a long numeric list as its range."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) > LISTED_VALUES:
        try:
            numbers = sorted(float(v) for v in distinct)
            return f"{numbers[0]:g} to {numbers[-1]:g} ({len(distinct)} values)"
        except ValueError:
            pass
    text = ", ".join(distinct)
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 1] + "…"


def description(parent: Run, runs: Sequence[Run], val_ppl: Mapping[str, Sequence[float]]) -> str:
    """The parent's Overview (markdown): the command, the best child, then the table with each child linked."""
    keys, values = swept_values(runs)
    swept = {run.info.run_id: v for run, v in zip(runs, values)}

    def link(run: Run) -> str:
        return f"[{run.info.run_name}](#/experiments/{parent.info.experiment_id}/runs/{run.info.run_id})"

    command = " ".join(["python -m rnnexp.run", parent.data.tags.get(OVERRIDES_TAG, ""), "-m"])
    finished = sum(run.info.status == "FINISHED" for run in runs)
    intro = f"**Sweep** `{command}`: {len(runs)} runs, {finished} finished."
    winner = best(runs, val_ppl)
    if winner is not None:
        score = best_val_ppl(winner, val_ppl.get(winner.info.run_id, ()))
        test = winner.data.metrics.get("test_ppl")
        intro += f" Best: {link(winner)}, validation perplexity {score:.3f}" + (f", test {test:.3f}." if test else ".")
    failures = any(FAILURE_TAG in run.data.tags for run in runs)
    header = ["run", *keys, *RESULT_COLUMNS, *(["failure"] if failures else [])]
    rows = [
        [link(run), *cells(run, keys, swept, val_ppl), *([run.data.tags.get(FAILURE_TAG, "")] if failures else [])]
        for run in ranked(runs, val_ppl)
    ]
    footer = "\nThe table as CSV: `comparison.csv`; every child's validation curve: `val_curves.png` (Artifacts).\n"
    shown, more = len(rows), ""
    while True:  # within MLflow's limit for a tag: the best rows, and a note of the others
        text = f"{intro}\n\n{markdown_table(header, rows[:shown])}{more}{footer}"
        if len(text) <= MAX_TAG_VAL_LENGTH or shown <= 1:
            return text
        shown -= 1
        more = f"\n… and {len(rows) - shown} more runs in `comparison.md`.\n"


def summarise(client: MlflowClient, parent: RunLogger) -> list[Run]:
    """Compare the parent's children on it (also printed) and make it summarise them; return the children."""
    parent_run = client.get_run(parent.run_id)
    runs = children(client, parent_run)
    curves = {run.info.run_id: client.get_metric_history(run.info.run_id, "val_ppl") for run in runs}
    val_ppl = {run_id: [m.value for m in history] for run_id, history in curves.items()}
    header, rows = comparison(runs, val_ppl)
    table = markdown_table(header, rows)
    print(f"\nsweep {parent.run_id}: {len(runs)} runs\n{table}")
    parent.log_text(table, "comparison.md")
    parent.log_text(csv_table(header, rows), "comparison.csv")
    parent.log_figure(validation_curves(ranked(runs, val_ppl), curves), "val_curves.png")
    logged = parent_run.data.params  # params cannot change: a resumed sweep logs only new ones
    parent.log_params({key: value for key, value in sweep_params(runs).items() if key not in logged})
    tags = {MLFLOW_RUN_NOTE: description(parent_run, runs, val_ppl)}
    winner = best(runs, val_ppl)
    if winner is not None:
        headline = {"best_val_ppl": best_val_ppl(winner, val_ppl[winner.info.run_id])}
        if "test_ppl" in winner.data.metrics:
            headline["test_ppl"] = winner.data.metrics["test_ppl"]
        parent.log_metrics(headline, step=0)
        parent.flush()
        tags[BEST_RUN_TAG] = winner.info.run_id
    parent.set_tags(tags)
    return runs
