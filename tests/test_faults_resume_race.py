"""Two resumes of one run started at the same instant: exactly one continues it, the other gets one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from runner_setup import client, command, kill_mid_epoch_2, metric_histories, store

pytestmark = pytest.mark.faults

SETUP = [
    "train.epochs=2",
    "train.batch_size=16",
    "train.checkpoint_every=3",
    "train.log_every=2",
    "experiment_name=race",
]
REFUSALS = ("is being resumed by another process on this machine", "has finished: there is nothing to resume")


@pytest.mark.parametrize("killed_by", ["SIGKILL", "Ctrl-C"])
def test_of_two_simultaneous_resumes_exactly_one_continues_the_run(tmp_path: Path, killed_by: str) -> None:
    last = kill_mid_epoch_2(tmp_path, SETUP, other_run_id="")
    run_id = last.parent.name
    mlflow = client(tmp_path)
    if killed_by == "Ctrl-C":  # what a Ctrl-C leaves: KILLED, with the reason the loser used to trip on
        mlflow.set_tag(run_id, "failure_reason", f"stopped with a checkpoint: continue with resume={run_id}")
        mlflow.set_terminated(run_id, "KILLED")
    before = metric_histories(mlflow, run_id)

    resumes = [
        subprocess.Popen(
            command(tmp_path / f"resume{i}", *store(tmp_path), f"resume={run_id}"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    ended = [(p.wait(timeout=300), p.stderr.read().strip().splitlines()) for p in resumes]  # type: ignore[union-attr]

    assert sorted(code for code, _ in ended) == [0, 2], ended
    (refused,) = [lines for code, lines in ended if code == 2]
    assert len(refused) == 1 and refused[0].startswith(f"error: run {run_id} ")
    assert any(reason in refused[0] for reason in REFUSALS)
    print(f"the loser: {refused[0]}")
    after = mlflow.get_run(run_id)
    assert after.info.status == "FINISHED" and "failure_reason" not in after.data.tags
    histories = metric_histories(mlflow, run_id)
    for key, points in before.items():  # what was logged before the kill is there once, continued, not redone
        steps = [step for step, _ in histories[key]]
        assert len(steps) == len(set(steps)) and histories[key][: len(points)] == points
