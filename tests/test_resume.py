"""A run killed with SIGKILL and resumed ends bitwise where the uninterrupted run ends."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from runner_setup import (
    TINY,
    client,
    command,
    compose_run,
    kill_mid_epoch_2,
    metric_histories,
    saved_progress,
    store,
    wait_for,
)

from rnnexp.errors import UserError
from rnnexp.tracking import train
from rnnexp.training import checkpoint

# Two epochs of 20 batches, a checkpoint every 3 steps: long enough to be killed mid-epoch.
SETUP = [
    "train.epochs=2",
    "train.batch_size=16",
    "train.checkpoint_every=3",
    "train.log_every=2",
    "experiment_name=resume",
]


@pytest.mark.parametrize(
    ("truncation", "resume_from"),
    [
        # its last checkpoint, mid-epoch 2: the resumed run sends the metrics the kill left unsent;
        # the parameters are averaged from epoch 2 on, so the kill cuts the average short too
        ("window", "run id"),
        # an older checkpoint, mid-epoch 1, metrics sent at once: the resumed run recomputes steps
        # the store holds already and must not log them twice
        pytest.param("chunk", "early checkpoint", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, truncation: str, resume_from: str) -> None:
    overrides = [
        *SETUP,
        f"model.truncation={truncation}",
        f"train.flush_every_s={15 if resume_from == 'run id' else 0}",
    ]
    if resume_from == "run id":
        overrides.append("optim.average_from_epoch=1")
    reference = compose_run(tmp_path, *overrides)
    train(reference)
    mlflow = client(tmp_path)
    (uninterrupted,) = mlflow.search_runs([mlflow.get_experiment_by_name("resume").experiment_id])
    uninterrupted_id = uninterrupted.info.run_id

    early = tmp_path / "early.npz"
    killed = kill_mid_epoch_2(tmp_path, overrides, uninterrupted_id, on_first=lambda path: shutil.copy(path, early))
    early_progress = saved_progress(early)
    assert early_progress["epoch"] == 0 and 0 < early_progress["position"] < 20  # mid-epoch 1
    killed_id = checkpoint.load(early).meta["run_id"]
    assert mlflow.get_run(killed_id).info.status == "RUNNING"  # SIGKILL left it open

    resumed_from = saved_progress(killed)
    assert resumed_from["epoch"] == 1 and 0 < resumed_from["position"] < 20  # mid-epoch 2

    best = train(
        compose_run(tmp_path, *overrides, f"resume={early if resume_from == 'early checkpoint' else killed_id}")
    )

    assert best == pytest.approx(min(v for _, v in metric_histories(mlflow, killed_id)["val_loss"]))
    assert mlflow.get_run(killed_id).info.status == "FINISHED"
    assert metric_histories(mlflow, killed_id) == metric_histories(mlflow, uninterrupted_id)
    finished = checkpoint.load(tmp_path / "checkpoints" / killed_id / "last.npz")
    expected = checkpoint.load(tmp_path / "checkpoints" / uninterrupted_id / "last.npz")
    for name in ("U", "W", "V"):
        assert np.array_equal(finished.params[name], expected.params[name])
    for name, value in expected.optimizer.items():
        assert np.array_equal(finished.optimizer[name], value)
    with pytest.raises(UserError, match="has finished: there is nothing to resume"):
        train(compose_run(tmp_path, f"resume={killed_id}"))


@pytest.mark.slow
def test_ctrl_c_stops_after_a_step_with_a_checkpoint_and_the_run_killed(tmp_path: Path) -> None:
    process = subprocess.Popen(
        command(tmp_path, *TINY, *store(tmp_path), *SETUP, "train.epochs=20"),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(lambda: any((tmp_path / "checkpoints").glob("*/last.npz")), process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    (last,) = (tmp_path / "checkpoints").glob("*/last.npz")
    stopped = checkpoint.load(last)
    run_id, step = stopped.meta["run_id"], stopped.meta["progress"]["step"]
    assert (
        stderr.strip().splitlines()[-1]
        == f"interrupted: stopped at step {step} with a checkpoint: continue with resume={run_id}"
    )
    run = client(tmp_path).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"].endswith(f"resume={run_id}")
    train(compose_run(tmp_path, *SETUP, "train.epochs=20", f"resume={run_id}"))
    assert client(tmp_path).get_run(run_id).info.status == "FINISHED"
