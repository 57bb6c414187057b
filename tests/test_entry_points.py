"""The README's promises about every entry point: one-line errors, a help that says what each does, run
names in one style, and system metrics on a run shorter than MLflow's sampling interval."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_setup import client, compose_run

from rnnexp.tracking import train
from rnnexp.tracking.describe import single_run_name
from rnnexp.tracking.jobs import SweepJob

ENTRY_POINTS = ("run", "generate", "evaluate", "check_gradients", "ngram", "repair")


def entry_point(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    store = f"tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    uses_store = module in ("run", "generate", "evaluate", "repair") and not any(a.startswith("-") for a in args)
    command = [sys.executable, "-m", f"rnnexp.{module}", *args, *([store] if uses_store else [])]
    return subprocess.run(
        [*command, f"hydra.run.dir={tmp_path}/out"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("module", "args", "key"),
    [
        ("generate", (), "run_id"),  # the mandatory run_id left out: no "Error executing job" line above
        ("evaluate", (), "run_id"),
        ("run", ("optim.lr=???",), "lr"),
        ("check_gradients", ("model.hidden_dim=???",), "hidden_dim"),
        ("ngram", ("orders=???",), "orders"),
        ("repair", ("experiment_name=???",), "experiment_name"),
    ],
)
def test_a_missing_value_is_one_line_naming_it_and_exit_status_2(
    tmp_path: Path, module: str, args: tuple[str, ...], key: str
) -> None:
    done = entry_point(tmp_path, module, *args)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and key in line
    if module in ("generate", "evaluate"):
        assert line == f"error: {key} is required: add {key}=<value> (--help shows an example)."


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_each_help_says_what_the_entry_point_does_its_knobs_and_an_example(tmp_path: Path, module: str) -> None:
    done = entry_point(tmp_path, module, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"python -m rnnexp.{module} ")
    assert "powered by Hydra" not in text
    assert "== Knobs" in text or "== Main knobs" in text
    assert "Example" in text and f"  python -m rnnexp.{module}" in text.split("Example", 1)[1]
    training_groups = ("optim: ", "schedule: ", "experiment: ")
    if module == "run":
        assert all(group in text for group in training_groups)  # Hydra's $APP_CONFIG_GROUPS
        assert "\ndataset: ptb, reddit, synthetic, text\n" in text
    else:  # the trainer's groups do not apply
        assert not any(group in text for group in training_groups)
    if module in ("generate", "evaluate"):
        assert "run_id: ???" in text  # the config, with what is required


def test_run_names_read_the_same_in_a_sweep_and_alone() -> None:
    started = time.mktime((2026, 12, 6, 17, 54, 31, 0, 0, -1))
    assert single_run_name(["model.hidden_dim=50", "tracking_uri=sqlite:///x.db"], None, started) == "h50"
    assert single_run_name([], None, started) == "default 12-06 17:54:31"  # told apart by when they ran
    assert single_run_name(["blas_threads=2"], None, started) == "default 12-06 17:54:31"

    def job(number: int, swept: list[str]) -> SweepJob:
        return SweepJob("p" * 32, number, ["train.epochs=3", *swept], swept, 1, Path("/tmp/sweep"))

    assert job(0, ["model.hidden_dim=50"]).name == "h50"  # the parent of `hidden_dim=50,100` is `sweep h50,100`
    assert job(1, ["model.cell=lstm", "optim.lr=20"]).name == "lstm lr20"
    assert job(2, ["blas_threads=1"]).name == "job 2"  # nothing that changes the result: its number


def test_a_run_shorter_than_the_sampling_interval_logs_system_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)  # MLflow's 10 s
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    # About a second of training, where MLflow's monitor logs its first sample after 10 s.
    train(compose_run(tmp_path, "experiment_name=short", "diagnostics.enabled=false", "train.samples=0"))
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("short").experiment_id])
    cpu = mlflow.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    memory = mlflow.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
    assert cpu and len(memory) == len(cpu) and sorted(m.step for m in cpu) == list(range(len(cpu)))
    assert 0 < cpu[-1].value <= 100  # measured over the run, not psutil's placeholder 0.0 of a first reading
    assert memory[-1].value > 0
