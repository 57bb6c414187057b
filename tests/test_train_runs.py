"""What one training run leaves in MLflow: params, metrics with steps, tags, artifacts, status."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from runner_setup import client, compose_run

from rnnexp.config import resolve
from rnnexp.data import load_corpus
from rnnexp.engine import build_model, load_params
from rnnexp.errors import DivergedError, UserError
from rnnexp.tracking import train
from rnnexp.training import checkpoint
from rnnexp.training.loop import held_out_loss

TRAIN_BATCHES = 20  # 400 sentences, 80% for training, 16 a batch


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module (creating a sqlite store takes seconds); one experiment per test."""
    return tmp_path_factory.mktemp("store")


def only_run(tmp_path: Path, experiment: str):
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])
    return mlflow, run


def test_a_run_logs_flat_params_metrics_with_steps_tags_and_artifacts(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "train.epochs=2", "experiment_name=logged")
    best = train(cfg)
    mlflow, run = only_run(tmp_path, "logged")
    corpus = load_corpus(cfg.dataset, seed=cfg.seed)

    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["model.hidden_dim"], params["model.truncation"], params["optim.name"], params["train.epochs"]) == (
        "8",
        "window",
        "sgd",
        "2",
    )
    assert params["dataset.synthetic.n_sentences"] == "400" and params["optim.lr"] == "2.0"
    assert not {"lr", "hidden_dim", "epochs", "model.seed"} & set(params)  # each knob once, under its real name
    assert params["eval.protocol"] == "sentence"
    tags = run.data.tags
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["git_commit"]) and tags["git_dirty"] in ("true", "false")
    assert tags["dataset_digest"] == corpus.digest and tags["numpy"] == np.__version__
    assert tags["host"] and tags["blas"]

    history = {key: mlflow.get_metric_history(run.info.run_id, key) for key in run.data.metrics}
    assert [m.step for m in history["val_loss"]] == [0, TRAIN_BATCHES, 2 * TRAIN_BATCHES]
    assert [m.step for m in history["train_loss"]] == [TRAIN_BATCHES, 2 * TRAIN_BATCHES]  # log_every=20
    untrained = history["val_loss"][0].value
    assert untrained == pytest.approx(math.log(40), abs=0.05)  # small initial weights: near-uniform guesses
    assert history["val_loss"][-1].value < untrained - 0.5
    assert best == min(m.value for m in history["val_loss"])
    assert run.data.metrics["oracle_val_ppl"] == pytest.approx(math.exp(corpus.splits["valid"].oracle_nll))
    assert run.data.metrics["test_ppl"] == pytest.approx(math.exp(run.data.metrics["test_loss"]))
    assert run.data.metrics["test_ppl"] > run.data.metrics["oracle_test_ppl"]
    assert run.data.metrics["lr"] == 2.0 and run.data.metrics["tokens_per_sec"] > 0
    assert [m.step for m in history["diagnostics/grad_decay_k00"]] == [
        0,
        TRAIN_BATCHES,
        2 * TRAIN_BATCHES,
    ]  # diagnostics: on
    assert history["diagnostics/grad_decay_k03"][-1].value < history["diagnostics/grad_decay_k00"][-1].value

    artifacts = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for a in mlflow.list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {
        "config.yaml",
        "vocab.json",
        "curves.png",
        "gradient_decay.png",
        "samples.txt",
        "checkpoints",
        "checkpoints/last.npz",
        "checkpoints/best.npz",
    }
    samples = Path(mlflow.download_artifacts(run.info.run_id, "samples.txt", str(tmp_path))).read_text()
    assert len(samples.splitlines()) == 2


def test_chunk_mode_carries_the_state_across_chunks_and_learns(tmp_path: Path) -> None:
    train(
        compose_run(
            tmp_path, "model.truncation=chunk", "model.bptt_truncate=5", "train.batch_size=4", "experiment_name=chunk"
        )
    )
    mlflow, run = only_run(tmp_path, "chunk")
    losses = [m.value for m in mlflow.get_metric_history(run.info.run_id, "val_loss")]
    assert run.info.status == "FINISHED" and losses[-1] < losses[0] - 0.3


def test_a_diverging_run_stops_at_once_and_is_failed_with_the_step(tmp_path: Path) -> None:
    with pytest.raises(DivergedError, match=r"diverged at step 2 \(epoch 1\)"):
        train(compose_run(tmp_path, "optim.lr=1e6", "experiment_name=diverged"))
    _, run = only_run(tmp_path, "diverged")
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("diverged at step 2 (epoch 1): the training loss reached")


def test_bad_data_fails_the_run_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(UserError) as raised:
        train(compose_run(tmp_path, "dataset=text", f"dataset.path={missing}", "experiment_name=bad_data"))
    _, run = only_run(tmp_path, "bad_data")
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == str(raised.value)
    assert str(missing) in str(raised.value)


def test_impossible_values_are_refused_before_any_run_starts(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.hidden_dim must be >= 1, got -5"):
        train(compose_run(tmp_path, "model.hidden_dim=-5", "experiment_name=refused"))
    assert client(tmp_path).get_experiment_by_name("refused") is None


def test_averaged_parameters_are_what_is_validated_kept_and_tested(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "train.epochs=3", "optim.average_from_epoch=1", "experiment_name=averaged")
    train(cfg)
    mlflow, run = only_run(tmp_path, "averaged")
    folder = tmp_path / "checkpoints" / run.info.run_id
    last, best = checkpoint.load(folder / "last.npz"), checkpoint.load(folder / "best.npz")
    steps = int(last.optimizer["t"])
    assert int(last.optimizer["average_count"]) == steps - steps // 3  # every update of epochs 2 and 3
    average = {key.removeprefix("average."): v for key, v in last.optimizer.items() if key.startswith("average.")}
    assert set(average) == set(last.params)

    run_cfg = resolve(cfg)
    corpus = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
    model = build_model(run_cfg.model, len(corpus.vocab), run_cfg.seed)

    def loss(params: dict, split: str) -> float:
        load_params(model, params)
        return held_out_loss(run_cfg, model, corpus.splits[split])

    val_losses = [m.value for m in sorted(mlflow.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)]
    # Float32 losses re-scored in this process (its own BLAS threads and kernel): float32 tolerances.
    assert loss(average, "valid") == pytest.approx(val_losses[-1], rel=1e-6)  # the mean, not the iterate, is scored
    assert abs(loss(last.params, "valid") - val_losses[-1]) > 1e-4
    assert loss(best.params, "valid") == pytest.approx(min(val_losses), rel=1e-6)
    assert loss(best.params, "test") == pytest.approx(run.data.metrics["test_loss"], rel=1e-6)


def test_averaging_cannot_start_before_the_first_epoch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="optim.average_from_epoch must be >= 0 or null, got -1"):
        train(compose_run(tmp_path, "optim.average_from_epoch=-1", "experiment_name=refused"))
