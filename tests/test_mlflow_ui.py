"""What `make ui-check` shows in a browser, read back through MlflowClient; and the logged model served."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from runner_setup import TINY, client, command, store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a run and a two-job sweep, as the command line makes them; system metrics every second."""
    tmp_path = tmp_path_factory.mktemp("ui")
    env = {**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    for args in ([*TINY, *store(tmp_path)], [*TINY, *store(tmp_path), "model.hidden_dim=8,16", "-m"]):
        result = subprocess.run(
            command(tmp_path, *args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
    return tmp_path


def test_runs_and_sweeps_summarise_themselves_in_mlflow(ui_store: Path) -> None:
    mlflow_client = client(ui_store)
    experiment = mlflow_client.get_experiment_by_name("rnnexp")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "rnnexp" in experiment.tags[MLFLOW_RUN_NOTE]
    found = mlflow_client.search_runs([experiment.experiment_id])
    (single,) = [r for r in found if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("sweep") != "true"]
    (parent,) = [r for r in found if r.data.tags.get("sweep") == "true"]
    children = sorted(
        (r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: r.data.metrics["best_val_ppl"],
    )

    assert single.info.run_name == "h8 v40 lr2 ep1 b16 n_sentences=400 samples=2"  # TINY, bookkeeping left out
    assert single.data.tags[MLFLOW_RUN_NOTE].startswith(
        "```\npython -m rnnexp.run model.hidden_dim=8 dataset.vocab_size=40"
    )
    assert "**Data** `synthetic`" in single.data.tags[MLFLOW_RUN_NOTE]
    params = single.data.params
    assert params["model.hidden_dim"] == "8" and params["optim.lr"] == "2.0" and "None" not in params.values()
    assert not {"hidden_dim", "lr", "epochs", "tracking_uri", "run_name"} & set(params)
    contexts = sorted(i.tags[0].value for i in single.inputs.dataset_inputs)
    assert contexts == ["testing", "training", "validation"]
    system = {key for key in single.data.metrics if key.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
    assert {
        "train_loss",
        "val_ppl",
        "test_ppl",
        "best_val_ppl",
        "lr",
        "tokens_per_sec",
        "tokens_per_sec_mean",
        "diagnostics/grad_decay_k07",
        "diagnostics/w_spectral_radius",
    } <= set(single.data.metrics)
    (model,) = mlflow_client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{single.info.run_id}'"
    )
    assert model.name == "model" and model.status == LoggedModelStatus.READY  # listed on the Models tab

    assert parent.info.run_name == "sweep h8 v40 lr2 ep1 b16 n_sentences=400 samples=2 h8,16"  # TINY, then the axis
    assert parent.data.params["model.hidden_dim"] == "8, 16" and parent.data.params["model.truncation"] == "window"
    best = children[0]
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_ppl"] == best.data.metrics["best_val_ppl"]
    assert parent.data.metrics["test_ppl"] == best.data.metrics["test_ppl"]
    note = parent.data.tags[MLFLOW_RUN_NOTE]
    links = [f"[{c.info.run_name}](#/experiments/{experiment.experiment_id}/runs/{c.info.run_id})" for c in children]
    assert [line.split(" | ")[0][2:] for line in note.splitlines() if line.startswith("| [")] == links
    artifacts = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)}
    assert {"comparison.md", "comparison.csv", "val_curves.png"} <= artifacts

    generate = subprocess.run(
        command(ui_store, f"run_id={parent.info.run_id}", *store(ui_store)[:1], module="rnnexp.generate"),
        cwd=ui_store,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generate.returncode == 2
    assert generate.stderr.strip() == (
        f"error: run {parent.info.run_id} is the parent run of a sweep ({parent.info.run_name}), which holds no model: "
        f"use its best child, run_id={best.info.run_id} ({best.info.run_name})."
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_logged_model_loads_and_answers_mlflow_models_serve_on_loopback(
    ui_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{ui_store}/mlflow.db"
    mlflow_client = client(ui_store)
    experiment = mlflow_client.get_experiment_by_name("rnnexp").experiment_id
    (single,) = [r for r in mlflow_client.search_runs([experiment], "attributes.run_name LIKE 'h8 %'")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"runs:/{single.info.run_id}/model")
    words = model.unwrap_python_model().vocab.words
    texts = [" ".join(words[3:9]), " ".join(words[10:13])]
    local = model.predict(pd.DataFrame({"text": texts}))
    assert local["ppl"].iloc[0] < len(words)  # trained: better than guessing

    port = free_port()
    # the server starts `uvicorn` from PATH: the virtual environment's, as in an activated one
    serving_env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            f"runs:/{single.info.run_id}/model",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=serving_env,
        cwd=ui_store,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow models serve did not start"
                time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.load(response)["predictions"]
        generate = {**body, "params": {"task": "generate", "max_len": 5, "seed": 3}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", json.dumps(generate).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            continued = json.load(response)["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert [row["ppl"] for row in served] == pytest.approx(list(local["ppl"]))
    assert [row["targets"] for row in served] == list(local["targets"])
    expected = model.predict(pd.DataFrame({"text": texts}), params={"task": "generate", "max_len": 5, "seed": 3})
    assert [row["continuation"] for row in continued] == list(expected["continuation"])
