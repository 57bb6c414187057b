"""The evaluation protocols against literal loops, and the numbers a word-level run logs because of them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from runner_setup import client, compose_run

from rnnexp.config import DatasetConfig, resolve
from rnnexp.config.schema import ModelConfig
from rnnexp.data import Split, load_corpus
from rnnexp.engine import build_model
from rnnexp.engine.rnn import RNNLM
from rnnexp.errors import UserError
from rnnexp.tracking import train, trained
from rnnexp.training import evaluation
from rnnexp.training.baseline import timed_table

PTB_VALID = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb.valid.txt"
needs_ptb = pytest.mark.skipif(not PTB_VALID.is_file(), reason=f"{PTB_VALID} is absent")
# The PTB file split by lines (90 / 5 / 5), the full corpus looked for in an empty folder.
PTB_SPLIT = [
    "dataset=ptb",
    f"dataset.fallback_path={PTB_VALID}",
    "dataset.valid_fraction=0.05",
    "dataset.test_fraction=0.05",
    "dataset.max_sentences=600",
    "dataset.vocab_size=2000",
]


def literal_stream_nll(model: RNNLM, stream: np.ndarray) -> np.ndarray:
    """Token by token from one zero state: s_t = tanh(U x_t + W s_{t-1}), -log softmax(V s_t)[x_{t+1}]."""
    U, W, V = (model.params[name].astype(np.float64) for name in ("U", "W", "V"))
    s, scores = np.zeros(model.H), []
    for word, target in zip(stream[:-1], stream[1:]):
        s = np.tanh(U[:, word] + W @ s)
        logits = V @ s
        scores.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target])
    return np.array(scores)


@needs_ptb
def test_stateful_scores_equal_a_literal_token_by_token_loop_on_ptb_lines(tmp_path: Path) -> None:
    corpus = load_corpus(
        DatasetConfig(name="ptb", path=str(PTB_VALID), vocab_size=500, max_sentences=200), cache_dir=tmp_path
    )
    split = corpus.splits["valid"]
    model = build_model(
        ModelConfig(hidden_dim=12, bptt_truncate=4, truncation="window", dtype="float64"), len(corpus.vocab), 4
    )
    model.params["W"] *= 2.5  # a state that matters from one token to the next
    stream = split.stream()
    assert stream[0] == corpus.vocab.index("<eos>")  # the split's leading boundary token is the first input
    expected = literal_stream_nll(model, stream)
    for segment_length in (1, 7, 4096):
        scores = evaluation.stateful_nll(model, stream, segment_length)
        assert scores.shape == (len(stream) - 1,)  # every token after the first predicted exactly once
        np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=0)
    zero_state = evaluation.sentence_nll(model, split.sentences, batch_size=16)
    assert zero_state.size == split.n_targets == scores.size  # the same tokens, scored from a zero state
    assert abs(zero_state.mean() - scores.mean()) > 1e-3


def test_sentence_scores_keep_the_sentence_order_and_equal_the_logged_mean() -> None:
    model = build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 9, 1)
    rng = np.random.default_rng(0)
    sentences = [rng.integers(0, 9, n) for n in (5, 2, 9, 3, 7)]
    scores = evaluation.sentence_nll(model, sentences, batch_size=2)
    expected = np.concatenate([literal_stream_nll(model, s) for s in sentences])
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=0)
    assert evaluation.sentence_loss(model, sentences, 2) == pytest.approx(expected.mean(), rel=1e-12)


def test_a_stream_shorter_than_two_tokens_is_refused() -> None:
    with pytest.raises(UserError, match="a stream of 1 token.*two tokens or more"):
        evaluation.token_nll(
            build_model(ModelConfig(hidden_dim=3, bptt_truncate=4, truncation="window", dtype="float64"), 5, None),
            Split([np.array([2])]),
            "stateful",
        )


@needs_ptb
def test_a_chunk_trained_run_logs_the_stateful_score_which_the_zero_state_score_misstates(tmp_path: Path) -> None:
    cfg = compose_run(
        tmp_path,
        *PTB_SPLIT,
        "dataset.mode=stream",
        "model.truncation=chunk",
        "model.bptt_truncate=20",
        "train.batch_size=8",
        "model.hidden_dim=24",
        "optim.lr=2",
        "optim.clip_norm=0.25",
        "train.epochs=2",
        "experiment_name=stream",
        f"dataset.data_dir={tmp_path}/empty",
        "diagnostics.enabled=false",
        "baseline.orders=[2,3]",
    )
    run_cfg = resolve(cfg)
    assert run_cfg.eval.protocol == "stateful"  # auto, for data trained with its state carried
    best = train(cfg)
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("stream").experiment_id])
    assert run.data.params["eval.protocol"] == "stateful"

    model = trained.load(mlflow, run.info.run_id, "best", tmp_path / "checkpoints").model
    corpus = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
    valid, test = corpus.splits["valid"], corpus.splits["test"]
    stateful = evaluation.mean_nll(model, valid, "stateful")
    zero_state = evaluation.sentence_loss(model, valid.sentences)  # each 35-token segment from a zero state
    # Float32 work re-scored here with this process's BLAS threads and kernel: equal to float32 precision.
    assert best == pytest.approx(stateful, rel=1e-6)  # best-model selection reads the protocol's number
    assert run.data.metrics["best_val_ppl"] == pytest.approx(math.exp(stateful), rel=1e-6)
    assert run.data.metrics["test_ppl"] == pytest.approx(math.exp(evaluation.mean_nll(model, test, "stateful")))
    assert zero_state > stateful + 0.02  # the old protocol: worse by more than 2% in perplexity

    table = {row["order"]: row for row in timed_table(corpus, "stateful", [2, 3], modified=True)}
    for order in (2, 3):  # the baseline is scored on exactly the RNN's tokens
        assert run.data.metrics[f"kn{order}_val_ppl"] == pytest.approx(table[order]["valid_ppl"], rel=1e-9)
        assert run.data.metrics[f"kn{order}_test_ppl"] == pytest.approx(table[order]["test_ppl"], rel=1e-9)
        assert table[order]["valid_tokens"] == len(valid.stream()) - 1
    (lam_key,) = [key for key in run.data.metrics if key.endswith("_lambda")]
    order = lam_key[len("interp_kn") : -len("_lambda")]
    assert 0.0 <= run.data.metrics[lam_key] <= 1.0
    mixed_val = run.data.metrics[f"interp_kn{order}_val_ppl"]
    assert mixed_val <= min(run.data.metrics["best_val_ppl"], run.data.metrics[f"kn{order}_val_ppl"]) + 1e-9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.protocol=stateful"], "eval.protocol=stateful needs stream data"),
        (["model.truncation=chunk", "eval.protocol=sentence"], "eval.protocol=sentence scores from a zero state"),
        (["eval.protocol=streaming"], "eval.protocol must be one of auto, stateful, sentence"),
        (["baseline.enabled=true"], "baseline.enabled=true needs word-level real data, but synthetic is not"),
        (["baseline.orders=[0,3]"], r"Kneser–Ney orders must lie between 1 and 5, got \[0\]"),
        (["baseline.orders=[6]"], r"Kneser–Ney orders must lie between 1 and 5, got \[6\]"),
        (["dataset=text", "dataset.level=char", "baseline.enabled=true"], "it is character-level data"),
    ],
)
def test_impossible_protocols_and_baselines_are_one_sentence(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        resolve(compose_run(tmp_path, *overrides))


def test_patience_stops_a_run_whose_validation_loss_no_longer_improves(tmp_path: Path) -> None:
    # A rate so small that float32 weights cannot move: validation never improves after epoch 0.
    best = train(
        compose_run(tmp_path, "optim.lr=1e-30", "train.epochs=6", "train.patience=2", "experiment_name=patience")
    )
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("patience").experiment_id])
    epochs = [m.value for m in mlflow.get_metric_history(run.info.run_id, "epoch")]
    assert epochs == [0, 1, 2] and run.data.metrics["stopped_early_epoch"] == 2
    assert best == mlflow.get_metric_history(run.info.run_id, "val_loss")[0].value
    assert run.info.status == "FINISHED" and "test_ppl" in run.data.metrics
