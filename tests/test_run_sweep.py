"""Multiruns: one MLflow parent run, a child per job, a comparison when the sweep ends."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from joblib import Parallel, delayed
from runner_setup import CONF_DIR, TINY, client, run_cli, store, store_overrides

from rnnexp import callbacks
from rnnexp.tracking.jobs import FAILED_JOB_LOSS


def sweep_runs(tmp_path: Path):
    mlflow = client(tmp_path)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("rnnexp").experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("sweep") == "true"]
    children = sorted((run for run in runs if run is not parent), key=lambda run: run.data.tags["sweep_job"])
    return mlflow, parent, children


def test_a_sweep_compares_its_jobs_and_goes_on_past_a_diverging_one(tmp_path: Path) -> None:
    result = run_cli(tmp_path, *TINY, *store(tmp_path), "optim.lr=2,1000", "-m")

    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert errors[0].startswith("error: job 1 (lr1000): diverged at step 2 (epoch 1)")
    assert errors[-1].startswith("error: 1 of 2 sweep jobs failed (lr1000)")
    mlflow, parent, children = sweep_runs(tmp_path)
    assert [child.data.tags["mlflow.parentRunId"] for child in children] == [parent.info.run_id] * 2
    assert [(c.info.run_name, c.info.status) for c in children] == [("lr2", "FINISHED"), ("lr1000", "FAILED")]
    assert children[1].data.tags["failure_reason"].startswith("diverged at step 2")
    assert parent.info.status == "FINISHED"

    artifacts = {a.path for a in mlflow.list_artifacts(parent.info.run_id)}
    assert artifacts == {"comparison.md", "comparison.csv", "val_curves.png"}
    table = (
        Path(mlflow.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))).read_text().splitlines()
    )
    assert table[0] == "job,run,optim.lr,status,best val ppl,test ppl,tokens/s,run id,failure"  # best first
    best_ppl = min(m.value for m in mlflow.get_metric_history(children[0].info.run_id, "val_ppl"))
    assert table[1].startswith(f"0,lr2,2,FINISHED,{best_ppl:.3f},{children[0].data.metrics['test_ppl']:.3f},")
    assert table[2].startswith("1,lr1000,1000,FAILED,")
    assert "| job | run | optim.lr | status | best val ppl |" in result.stdout  # the table, printed


def test_jobs_that_fail_before_their_run_exists_still_fail_the_sweep(tmp_path: Path) -> None:
    result = run_cli(tmp_path, *TINY, *store(tmp_path), "model.hidden_dim=-5,-6", "-m")

    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: 2 of 2 sweep jobs failed (h-5: model.hidden_dim must be >= 1, got -5.; h-6: ")
    )
    mlflow = client(tmp_path)
    (parent,) = mlflow.search_runs([mlflow.get_experiment_by_name("rnnexp").experiment_id])
    assert parent.data.tags["sweep"] == "true" and parent.info.status == "FAILED"


@pytest.mark.slow
def test_parallel_jobs_write_to_one_fresh_sqlite_store(tmp_path: Path) -> None:
    assert not (tmp_path / "mlflow.db").exists()  # the sweep's launcher creates it before the jobs start
    result = run_cli(
        tmp_path,
        *TINY,
        *store_overrides(tmp_path),
        "model.hidden_dim=8,16",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "-m",
    )

    assert result.returncode == 0, result.stderr
    mlflow, parent, children = sweep_runs(tmp_path)
    assert [(c.info.run_name, c.info.status) for c in children] == [
        ("h8", "FINISHED"),
        ("h16", "FINISHED"),
    ]
    assert [c.data.params["blas_threads"] for c in children] == ["1", "1"]
    assert all(len(mlflow.get_metric_history(c.info.run_id, "val_loss")) == 2 for c in children)
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_the_optuna_sweeper_gets_the_best_loss_and_survives_a_diverging_trial(tmp_path: Path) -> None:
    tiny = [override for override in TINY if not override.startswith("optim.lr=")]  # Optuna lets a fixed value win
    result = run_cli(
        tmp_path,
        *tiny,
        *store(tmp_path),
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=2",
        "optim.lr=choice(1000,2)",
        "-m",
    )

    assert result.returncode == 2 and "1 of 2 sweep jobs failed (lr1000)" in result.stderr
    mlflow, parent, children = sweep_runs(tmp_path)
    assert {c.data.params["optim.lr"]: c.info.status for c in children} == {"1000.0": "FAILED", "2.0": "FINISHED"}
    (finished,) = [c for c in children if c.info.status == "FINISHED"]
    best = min(m.value for m in mlflow.get_metric_history(finished.info.run_id, "val_loss"))
    assert f"Best value: {best}" in result.stdout  # the job's return value, which Optuna minimised
    assert f"{FAILED_JOB_LOSS}" not in result.stdout


@pytest.mark.slow
def test_submitit_runs_the_jobs_of_a_sweep_as_cluster_jobs_would(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        *TINY,
        *store(tmp_path),
        "model.hidden_dim=8,16",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "-m",
    )

    assert result.returncode == 0, result.stderr
    mlflow, parent, children = sweep_runs(tmp_path)
    assert [(c.info.run_name, c.info.status) for c in children] == [
        ("h8", "FINISHED"),
        ("h16", "FINISHED"),
    ]
    assert {a.path for a in mlflow.list_artifacts(parent.info.run_id)} == {
        "comparison.md",
        "comparison.csv",
        "val_curves.png",
    }


def joblib_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*store(tmp_path), *overrides], return_hydra_config=True)


def test_the_joblib_launcher_finds_the_workers_the_sweep_started_and_prepared(tmp_path: Path) -> None:
    settings = callbacks.joblib_settings(joblib_config(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
    assert settings is not None and settings["backend"] == "loky" and settings["n_jobs"] == 2
    warm = callbacks.warm_joblib_workers(settings, None)

    def job() -> tuple[int, bool]:
        time.sleep(0.2)  # long enough that both workers take a job
        return os.getpid(), "mlflow.store.tracking.sqlalchemy_store" in sys.modules

    jobs = Parallel(**settings)(delayed(job)() for _ in range(4))  # as the launcher calls it
    assert len(set(warm)) == 2 and {pid for pid, _ in jobs} == set(warm)
    assert all(prepared for _, prepared in jobs)


def test_other_launchers_start_no_workers_early(tmp_path: Path) -> None:
    config = joblib_config(tmp_path)
    assert callbacks.joblib_settings(config) is None and callbacks.start_joblib_workers(config) is None
