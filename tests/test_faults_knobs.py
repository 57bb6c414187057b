"""Every knob is checked before anything starts: one line naming it and its range, exit 2, no run."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from runner_setup import client, compose_run, run_cli, store

from rnnexp.config import resolve
from rnnexp.config.resolve import memory_estimate, validate_generate
from rnnexp.engine import build_model
from rnnexp.errors import UserError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=-1"], "seed must be >= 0 (NumPy seeds are non-negative), got -1."),
        (["optim=adam", "optim.beta1=1.0"], "optim.beta1 must lie in [0, 1), got 1.0."),
        (["optim=adam", "optim.beta2=-0.1"], "optim.beta2 must lie in [0, 1), got -0.1."),
        (["optim=adam", "optim.eps=0"], "optim.eps must be a finite number > 0, got 0.0."),
        (["optim=momentum", "optim.momentum=2"], "optim.momentum must lie in [0, 1), got 2.0."),
        (["optim.lr=inf"], "optim.lr must be a finite number > 0, got inf."),
        (["optim.lr=nan"], "optim.lr must be a finite number > 0, got nan."),
        (["optim.clip_norm=inf"], "optim.clip_norm must be finite or null, got inf."),
        (["train.sample_max_len=-5"], "train.sample_max_len must be >= 1, got -5."),
        (
            ["experiment_name=''"],
            "experiment_name must name an MLflow experiment, got '': drop the override (the default is rnnexp) "
            "or give a name.",
        ),
    ],
)
def test_a_value_outside_what_the_maths_allows_is_refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as refused:
        resolve(compose_run(tmp_path, *overrides))
    assert str(refused.value) == message


def test_a_model_that_cannot_fit_in_memory_is_refused_with_its_estimate(tmp_path: Path) -> None:
    # W: 10^18 float32 numbers three times (parameters, gradients, best copy), 11,175,870,895.6 GiB, and a
    # batch of 16 sentences × 4 steps of 2·10^9 activations, 476.8 GiB
    with pytest.raises(
        UserError, match=r"^this model needs at least 11,175,871,372\.\d GiB \(model\.hidden_dim=1000000000,"
    ):
        resolve(compose_run(tmp_path, "model.hidden_dim=1000000000"))
    resolve(compose_run(tmp_path, "model.hidden_dim=2000"))  # 16 MB of network: accepted


def test_the_memory_estimate_counts_parameters_gradients_optimiser_state_and_a_batch() -> None:
    cfg = resolve(compose_run(Path("/tmp"), "model.hidden_dim=100", "train.batch_size=1", "model.bptt_truncate=4"))
    # U, W and V: 100·8000 + 100·100 + 8000·100 parameters, three copies for sgd (parameters, gradients,
    # best), and 4 tokens × (8000 scores + 2·100 activations), all float32
    assert memory_estimate(cfg, 8000) == ((2 * 100 * 8000 + 100 * 100) * 3 + 4 * (8000 + 200)) * 4
    for cell, optimiser in (("rnn", "sgd"), ("gru", "adam"), ("lstm", "momentum")):
        gated = resolve(compose_run(Path("/tmp"), f"model={cell}", f"optim={optimiser}", "model.hidden_dim=16"))
        model = build_model(gated.model, 50, 0)
        held = sum(p.nbytes for p in model.params.values())
        # never below what the model's parameters, gradients and best copy really take: it refuses only what cannot fit
        assert memory_estimate(gated, 50) >= 3 * held


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"num": -3}, "num must be >= 1 (sentences to print), got -3."),
        ({"max_len": -1}, "max_len must be >= 1 (words per sentence at most), got -1."),
        ({"top_k": -2}, "top_k must be >= 1 (the words kept) or null (all), got -2."),
        ({"temperature": math.nan}, "temperature must be a finite number > 0, got nan."),
        ({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0."),
    ],
)
def test_generate_refuses_values_that_print_nothing_or_nonsense(knobs: dict, message: str) -> None:
    values = {"num": 5, "max_len": 30, "temperature": 1.0, "top_k": None, "seed": 0, **knobs}
    with pytest.raises(UserError) as refused:
        validate_generate(**values)
    assert str(refused.value) == message
    validate_generate(5, 30, 0.5, 3, 0)


def test_the_entry_points_answer_a_bad_knob_in_one_line_and_start_no_run(tmp_path: Path) -> None:
    store(tmp_path)
    runs_before = client(tmp_path).search_runs([e.experiment_id for e in client(tmp_path).search_experiments()])
    done = run_cli(tmp_path, "optim=adam", "optim.beta1=1.0", *store(tmp_path))
    assert (done.returncode, done.stderr.splitlines()) == (2, ["error: optim.beta1 must lie in [0, 1), got 1.0."])
    generated = subprocess.run(
        [sys.executable, "-m", "rnnexp.generate", "run_id=abc", "temperature=nan", f"hydra.run.dir={tmp_path}/hydra"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (generated.returncode, generated.stderr.splitlines()) == (
        2,
        ["error: temperature must be a finite number > 0, got nan."],
    )
    runs_after = client(tmp_path).search_runs([e.experiment_id for e in client(tmp_path).search_experiments()])
    assert len(runs_before) == len(runs_after) == 0
