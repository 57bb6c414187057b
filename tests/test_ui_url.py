"""The address `make ui` prints and the server it starts (what the page then shows: docs/ui_check.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mlflow import MlflowClient

from rnnexp.tracking.ui import NO_RUNS, VIEW_ID, runs_table_url, ui_url

ROOT = Path(__file__).resolve().parents[1]
BASE = "http://127.0.0.1:5000"


def hash_route(url: str) -> tuple[str, dict[str, list[str]]]:
    """The route and the query inside the URL's hash, where MLflow's UI reads them."""
    route, _, query = urlsplit(url).fragment.partition("?")
    return route, parse_qs(query)


def test_the_url_opens_the_experiments_runs_table_through_a_saved_view_sorted_by_best_val_ppl(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_experiment("other")
    experiment_id = client.create_experiment("rnnexp")

    url, note = ui_url(uri, "rnnexp", BASE)

    assert note is None and url.startswith(f"{BASE}/#/")  # nothing before the hash: the UI reads only the hash
    route, query = hash_route(url)
    assert route == f"/experiments/{experiment_id}/runs"
    assert query == {"workflowType": ["machine_learning"], "viewStateShareKey": [VIEW_ID]}
    tag = client.get_experiment(experiment_id).tags[f"mlflow.sharedViewState.{VIEW_ID}"]
    view = json.loads(tag)
    state = json.loads(view["state"])  # the envelope MLflow 3.17 writes for "Save view"
    assert isinstance(view["name"], str) and isinstance(view["createdAt"], int)
    assert state["orderByKey"] == "metrics.`best_val_ppl`" and state["orderByAsc"] is True
    assert {"metrics.`best_val_ppl`", "metrics.`test_ppl`", "params.`model.hidden_dim`"} <= set(
        state["selectedColumns"]
    )
    assert "runsExpanded" not in state  # the UI drops it from a shared view: a click

    assert ui_url(uri, "rnnexp", BASE) == (url, None)
    assert client.get_experiment(experiment_id).tags[f"mlflow.sharedViewState.{VIEW_ID}"] == tag  # unchanged


def test_without_the_view_the_sort_travels_in_the_hash() -> None:
    # MLflow ignores a view when the URL holds a sort, so the URL carries one or the other.
    route, query = hash_route(runs_table_url(BASE, "7", with_view=False))
    assert route == "/experiments/7/runs"
    assert query == {
        "workflowType": ["machine_learning"],
        "orderByKey": ["metrics.`best_val_ppl`"],
        "orderByAsc": ["true"],
    }


def test_no_store_or_no_experiment_gives_the_home_page_and_creates_nothing(tmp_path: Path) -> None:
    assert ui_url(f"sqlite:///{tmp_path}/mlflow.db", "rnnexp", BASE) == (BASE, NO_RUNS)
    assert not (tmp_path / "mlflow.db").exists()
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").create_experiment("other")
    assert ui_url(f"sqlite:///{tmp_path}/mlflow.db", "rnnexp", BASE) == (BASE, NO_RUNS)


def test_make_ui_prints_the_url_and_starts_one_server_process_without_job_consumers(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = MlflowClient(store).create_experiment("rnnexp")
    make = ["make", "-s", "-o", ".venv/.installed", f"UI_STORE={store}", "UI_PORT=5123"]
    recipe = subprocess.run([*make, "-n", "ui"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    entry, server = recipe.split("\n", 1)
    assert entry.endswith(f"-m rnnexp.ui tracking_uri={store} url=http://127.0.0.1:5123")
    assert server.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false ") and " --workers 1" in server
    assert f"--backend-store-uri {store}" in server and "--port 5123" in server

    printed = subprocess.run(
        [sys.executable, "-m", "rnnexp.ui", f"tracking_uri={store}", "url=http://127.0.0.1:5123"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert printed == [
        f"http://127.0.0.1:5123/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={VIEW_ID}"
    ]
