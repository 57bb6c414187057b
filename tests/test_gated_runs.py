"""The gated cells through the real trainer: MLflow runs, checkpoints, a bitwise resume, generate, evaluate, sweeps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from runner_setup import TINY, client, compose_run, kill_mid_epoch_2, metric_histories, run_cli, run_on_trained, store

from rnnexp.config import resolve
from rnnexp.config.schema import ModelConfig
from rnnexp.data import load_corpus
from rnnexp.engine import GatedLM, build_model
from rnnexp.errors import UserError
from rnnexp.tracking import train
from rnnexp.training import checkpoint
from rnnexp.training.state import restore_state

TRAIN_BATCHES = 20  # 400 sentences, 80% for training, 16 a batch


def only_run(tmp_path: Path, experiment: str):
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])
    return mlflow, run


@pytest.mark.parametrize("cell", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_a_gated_run_learns_logs_its_diagnostics_checkpoints_generates_and_evaluates(tmp_path: Path, cell: str):
    train(compose_run(tmp_path, f"model={cell}", "model.layers=2", "model.dropout=0.2", "experiment_name=gated"))
    mlflow, run = only_run(tmp_path, "gated")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["model.cell"], params["model.layers"], params["model.dropout"]) == (cell, "2", "0.2")
    history = metric_histories(mlflow, run.info.run_id)
    assert [step for step, _ in history["val_loss"]] == [0, TRAIN_BATCHES]
    assert history["val_loss"][0][1] == pytest.approx(math.log(40), abs=0.05)  # untrained: uniform guessing
    assert history["val_loss"][-1][1] < history["val_loss"][0][1] - 0.2
    for k in range(0, 10):  # the error's reach through the gated state, at every evaluation
        decay = history[f"diagnostics/grad_decay_k{k:02d}"]
        assert [step for step, _ in decay] == [0, TRAIN_BATCHES] and all(v > 0 for _, v in decay)
    assert f"diagnostics/grad_norm_{cell}1_Wh" in history and "diagnostics/w_spectral_radius" not in history

    saved = checkpoint.load(tmp_path / "checkpoints" / run.info.run_id / "last.npz")
    model = build_model(resolve(saved.meta["config"]).model, 40, 0)
    assert isinstance(model, GatedLM) and set(saved.params) == set(model.params)
    assert saved.params["U"].shape == (8, 40) and f"{cell}1_Wh" in saved.params

    generated = run_on_trained(tmp_path, "rnnexp.generate", run.info.run_id, "num=3")
    assert len(generated.stdout.splitlines()) == 3
    scored = run_on_trained(tmp_path, "rnnexp.evaluate", run.info.run_id, "split=test")
    assert f"perplexity {run.data.metrics['test_ppl']:.2f}" in scored.stdout


@pytest.mark.parametrize(
    ("cell", "truncation"), [("lstm", "window"), pytest.param("gru", "chunk", marks=pytest.mark.slow)]
)
def test_a_killed_gated_run_with_dropout_resumes_bitwise(tmp_path: Path, cell: str, truncation: str) -> None:
    """As tests/test_resume.py for the RNN; the dropout masks must come out the same after the resume."""
    overrides = [
        f"model={cell}",
        "model.dropout=0.3",
        f"model.truncation={truncation}",
        "train.epochs=2",
        "train.checkpoint_every=3",
        "train.log_every=2",
        "experiment_name=resume",
    ]
    train(compose_run(tmp_path, *overrides))
    mlflow = client(tmp_path)
    (uninterrupted,) = mlflow.search_runs([mlflow.get_experiment_by_name("resume").experiment_id])
    reference_id = uninterrupted.info.run_id

    killed = checkpoint.load(kill_mid_epoch_2(tmp_path, overrides, reference_id))
    killed_id = killed.meta["run_id"]
    assert mlflow.get_run(killed_id).info.status == "RUNNING"  # SIGKILL left it open
    assert 0 < killed.meta["progress"]["position"] < TRAIN_BATCHES

    train(compose_run(tmp_path, *overrides, f"resume={killed_id}"))

    assert mlflow.get_run(killed_id).info.status == "FINISHED"
    assert metric_histories(mlflow, killed_id) == metric_histories(mlflow, reference_id)
    finished = checkpoint.load(tmp_path / "checkpoints" / killed_id / "last.npz")
    expected = checkpoint.load(tmp_path / "checkpoints" / reference_id / "last.npz")
    assert set(finished.params) == set(expected.params) and f"{cell}0_Wx" in finished.params
    for name, value in expected.params.items():
        assert np.array_equal(finished.params[name], value)
    for name, value in expected.optimizer.items():
        assert np.array_equal(finished.optimizer[name], value)


def test_a_checkpoint_of_one_cell_is_refused_by_another(tmp_path: Path) -> None:
    def saved(model) -> checkpoint.Checkpoint:
        meta = {"progress": {}, "rng": checkpoint.generator_state(np.random.default_rng(0))}
        return checkpoint.Checkpoint(dict(model.params), {"t": np.array(0)}, meta, {"order": np.arange(3)})

    lstm_cfg = resolve(compose_run(tmp_path, "model=lstm"))
    corpus = load_corpus(lstm_cfg.dataset, seed=lstm_cfg.seed)
    lstm = build_model(lstm_cfg.model, 40, 0)
    cases = [
        (
            lstm_cfg,
            build_model(ModelConfig(hidden_dim=8, bptt_truncate=4, truncation="window", dtype="float64"), 40, 0),
        ),
        (resolve(compose_run(tmp_path, "model=gru")), lstm),
        (resolve(compose_run(tmp_path)), lstm),
    ]
    for cfg, other in cases:
        with pytest.raises(
            UserError, match=f"but a {cfg.model.cell} model has .*: resume it with the cell it was trained with."
        ):
            restore_state(cfg, corpus, saved(other), tmp_path)
    other_seed = build_model(lstm_cfg.model, 40, 3)
    same = restore_state(lstm_cfg, corpus, saved(other_seed), tmp_path)
    assert isinstance(same.model, GatedLM) and same.model.cell == "lstm"
    assert all(np.array_equal(same.model.params[n], other_seed.params[n]) for n in other_seed.params)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.cell=transformer"], "model.cell must be one of rnn, gru, lstm, got 'transformer'."),
        (["model=lstm", "model.layers=0"], "model.layers must be >= 1, got 0."),
        (["model=gru", "model.dropout=1.0"], r"model.dropout must lie in \[0, 1\), got 1.0."),
        (["model=lstm", "model.dropout=-0.5"], r"model.dropout must lie in \[0, 1\), got -0.5."),
        (
            ["model=lstm", "model.tie_weights=true", "model.embedding_dim=4"],
            "model.tie_weights needs embedding_dim = hidden_dim, got 4 and 8",
        ),
    ],
)
def test_impossible_gated_configs_are_refused_before_any_run_starts(tmp_path: Path, overrides, message) -> None:
    with pytest.raises(UserError, match=message):
        train(compose_run(tmp_path, *overrides, "experiment_name=refused"))
    experiment = client(tmp_path).get_experiment_by_name("refused")
    assert experiment is None or not client(tmp_path).search_runs([experiment.experiment_id])


def test_on_the_command_line_a_bad_cell_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "model=lstm", "model.layers=0")
    assert result.returncode == 2 and result.stderr.strip() == "error: model.layers must be >= 1, got 0."
    unknown = run_cli(tmp_path, "model=transformer")
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1
    assert unknown.stderr.startswith("error: In 'config': Could not find 'model/transformer'")
    assert "gru" in unknown.stderr and "lstm" in unknown.stderr  # the choices are named


def test_one_sweep_compares_the_three_cells(tmp_path: Path) -> None:
    result = run_cli(tmp_path, *TINY, *store(tmp_path), "model=lstm,gru,rnn", "-m")
    assert result.returncode == 0, result.stderr
    mlflow = client(tmp_path)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("rnnexp").experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("sweep") == "true"]
    children = sorted((run for run in runs if run is not parent), key=lambda run: run.data.tags["sweep_job"])
    assert [(c.data.params["model.cell"], c.info.status) for c in children] == [
        ("lstm", "FINISHED"),
        ("gru", "FINISHED"),
        ("rnn", "FINISHED"),
    ]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.data.metrics["test_ppl"] < 40 for c in children)  # each better than guessing
    header, *rows = (
        Path(mlflow.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))).read_text().splitlines()
    )
    column = header.split(",").index("model")
    assert sorted(row.split(",")[column] for row in rows) == ["gru", "lstm", "rnn"]
