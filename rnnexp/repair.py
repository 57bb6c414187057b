"""`python -m rnnexp.repair`: the runs that say RUNNING although their process is gone, and their repair.

    python -m rnnexp.repair                                # list them (every experiment of the store)
    python -m rnnexp.repair action=mark_killed             # close them KILLED, with the reason
    python -m rnnexp.repair action=mark_killed run_ids=[<id>,<id>]
    python -m rnnexp.repair action=repair_store            # finish an interrupted schema upgrade

A run names its owner (host, pid, the process's start time) and refreshes a heartbeat tag while it
runs (tracking.owner): on this host a run is stale when its process is gone, elsewhere when its
heartbeat is older than a few minutes. A process killed with SIGKILL, or lost with its machine,
leaves such runs; `resume=<run id>` continues one that logged its config (a run killed in its first
seconds, before that, cannot be resumed: the table says which), and marking it KILLED says so in MLflow.
"""

from __future__ import annotations

import time

import hydra
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from rnnexp import cli, config
from rnnexp.config.schema import REPAIR_ACTIONS
from rnnexp.errors import UserError
from rnnexp.tracking.lifecycle import get_run
from rnnexp.tracking.logger import FAILURE_TAG
from rnnexp.tracking.owner import HEARTBEAT_TAG, is_alive, owner
from rnnexp.tracking.store import connect, repair_store, resolve_tracking_uri
from rnnexp.tracking.tables import markdown_table
from rnnexp.tracking.trained import CONFIG_ARTIFACT


def stale_runs(client: MlflowClient, experiment_name: str | None = None) -> list[Run]:
    """RUNNING runs whose process is gone, oldest first."""
    if experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise UserError(
                f"no MLflow experiment {experiment_name!r} in {client.tracking_uri}: check "
                "experiment_name, or leave it out to look at every experiment."
            )
        ids = [experiment.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    runs: list[Run] = []
    token = None
    while ids:
        page = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    return sorted((run for run in runs if not is_alive(run)), key=lambda run: run.info.start_time)


def resumable(client: MlflowClient, run: Run) -> bool:
    """Whether `resume=` can continue the run: it logged its config (checkpoints come after that)."""
    return any(a.path == CONFIG_ARTIFACT for a in client.list_artifacts(run.info.run_id))


def describe_stale(client: MlflowClient, runs: list[Run]) -> str:
    names = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)}
    rows = []
    for run in runs:
        beat = run.data.tags.get(HEARTBEAT_TAG)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        rows.append(
            [
                run.info.run_id,
                names.get(run.info.experiment_id, run.info.experiment_id),
                run.info.run_name or "",
                started,
                owner(run) if beat else "no owner recorded",
                f"resume={run.info.run_id}" if resumable(client, run) else "no: killed before it logged its config",
            ]
        )
    return markdown_table(["run id", "experiment", "run", "started", "process", "resume"], rows)


def mark_killed(client: MlflowClient, runs: list[Run]) -> None:
    for run in runs:
        reason = (
            f"its process ({owner(run)}) ended without closing the run; marked KILLED by python -m rnnexp.repair: "
            + (
                f"resume={run.info.run_id} continues it"
                if resumable(client, run)
                else "it was killed before it logged its config, so it cannot be resumed: start it again"
            )
        )
        client.set_tag(run.info.run_id, FAILURE_TAG, reason)
        client.set_terminated(run.info.run_id, "KILLED")


def chosen(client: MlflowClient, run_ids: list[str]) -> list[Run]:
    """The runs `run_ids` names, each of which must be stale."""
    runs = [get_run(client, run_id) for run_id in run_ids]
    for run in runs:
        if run.info.status != "RUNNING":
            raise UserError(f"run {run.info.run_id} is {run.info.status}, not RUNNING: there is nothing to mark.")
        if is_alive(run):
            raise UserError(f"run {run.info.run_id} is still running ({owner(run)}): stop that process first.")
    return runs


@hydra.main(version_base="1.3", config_path="../conf", config_name="repair")
@cli.reports_user_errors
def main(cfg: config.RepairConfig) -> None:
    if cfg.action not in REPAIR_ACTIONS:
        raise UserError(f"action must be one of {', '.join(REPAIR_ACTIONS)}, got {cfg.action!r}.")
    uri = resolve_tracking_uri(cfg.tracking_uri)
    if cfg.action == "repair_store":
        if uri.startswith(("http://", "https://")):
            raise UserError(
                "a tracking server upgrades its own store: run this with the server's backend store "
                "as tracking_uri, on the server's machine."
            )
        done = repair_store(uri)
        print("\n".join(done) if done else f"the store {uri} needs no repair.")
        return
    client = connect(uri, writing=cfg.action != "list")
    runs = chosen(client, list(cfg.run_ids)) if cfg.run_ids else stale_runs(client, cfg.experiment_name)
    if not runs:
        print("no run is RUNNING without its process.")
        return
    print(describe_stale(client, runs), end="")
    if cfg.action == "mark_killed":
        mark_killed(client, runs)
        print(f"marked {len(runs)} run(s) KILLED; the resume column says how to continue each.")
    else:
        print(
            f"{len(runs)} run(s) RUNNING without their process: python -m rnnexp.repair action=mark_killed closes "
            "them KILLED; the resume column says how to continue each."
        )


if __name__ == "__main__":
    cli.guard(main)
