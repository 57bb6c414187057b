"""The tutorial reproduction: its checks on tiny inputs, and `make reproduce` end to end on a tiny config."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from experiments.tutorial import extra_claims, literal, published, report, samples
from experiments.tutorial.epoch_time import quantile_sentences
from experiments.tutorial.gradient_check import check_engine, wildml_relative_errors
from experiments.tutorial.result import NEEDS_FULL_DATA, REPRODUCED, ClaimResult
from experiments.tutorial.samples import draw, unknown_probability
from experiments.tutorial.timing import interleaved
from rnnexp.config.schema import ModelConfig
from rnnexp.data import Vocabulary
from rnnexp.engine import build_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXCERPT = PROJECT_ROOT.parent / "shared" / "data" / "reddit-comments-2015-08.head.csv"
X, Y = np.array(published.GRADCHECK_X), np.array(published.GRADCHECK_Y)


def test_wildml_gradient_check_passes_for_the_engine_in_every_truncation():
    for truncation, k in (("window", 4), ("window", 1000), ("full", 4)):
        errors = check_engine(X, Y, truncation, k)
        assert set(errors) == {"U", "V", "W"}
        assert max(errors.values()) < 1e-4  # WildML's threshold is 0.01


def test_wildml_gradient_check_rejects_a_wrong_gradient():
    model = literal.with_tutorial_weights(
        build_model(
            ModelConfig(hidden_dim=published.GRADCHECK_HIDDEN, bptt_truncate=4, truncation="full", dtype="float64"),
            published.GRADCHECK_VOCAB,
            None,
        )
    )
    wrong = {name: 1.1 * g for name, g in model.backprop(X, Y, reduction="sum").grads.items()}
    errors = wildml_relative_errors(model.params, wrong, lambda: float(model.token_nll(X, Y)[0].sum()), 0.001)
    assert min(errors.values()) > published.GRADCHECK_THRESHOLD


def test_the_tutorial_init_gives_the_loss_of_random_predictions():
    sentences = [np.random.default_rng(i).integers(0, 500, 12) for i in range(20)]
    model = literal.with_tutorial_weights(
        build_model(ModelConfig(hidden_dim=100, bptt_truncate=4, truncation="window", dtype="float64"), 500, None)
    )
    engine = float(np.mean([model.loss(s[:-1], s[1:]) for s in sentences]))
    wildml = literal.calculate_loss(literal.as_wildml(model), sentences)
    assert abs(wildml - math.log(500)) < 0.01
    assert abs(engine - wildml) < 1e-12


def test_wildml_training_loop_lowers_the_loss_from_ln_v():
    sentences = [np.random.default_rng(i).integers(0, 30, 10) for i in range(30)]
    model = literal.tutorial_model(30, 16)
    falling = literal.train_with_sgd(model, sentences, lr=0.05, epochs=4, evaluate_loss_after=1)
    assert len(falling) == 5 and abs(falling[0] - math.log(30)) < 0.05
    assert all(after < before for before, after in zip(falling, falling[1:]))


def test_samples_never_hold_the_unknown_token_even_when_the_model_prefers_it():
    words = ["SENTENCE_START", "SENTENCE_END", "UNKNOWN_TOKEN", *(f"w{i}" for i in range(17))]
    vocab = Vocabulary(words, unknown="UNKNOWN_TOKEN", start="SENTENCE_START", end="SENTENCE_END")
    model = build_model(ModelConfig(hidden_dim=8, bptt_truncate=4, truncation="window", dtype="float64"), len(vocab), 0)
    model.params["V"][vocab.unknown_id] = 3 * np.sign(model.params["U"].T.mean(axis=0) + 1e-3)  # favour UNK
    model.params["V"][vocab.end_id] = 0.0
    rng = np.random.default_rng(0)
    samples = draw(model, vocab, rng, count=5, min_words=3, max_words=40)
    assert len(samples.sentences) == 5 and samples.draws >= 5
    assert all(3 <= len(s) <= 40 and vocab.unknown_id not in s for s in samples.sentences)
    assert unknown_probability(model, samples.sentences[0], vocab.start_id, vocab.unknown_id) > 0.1


def test_timed_sentences_span_the_length_distribution():
    sentences = [np.arange(n) for n in range(3, 103)]
    picked = [len(s) for s in quantile_sentences(sentences, 4)]
    assert picked == [15, 40, 65, 90]


def test_interleaved_timing_samples_every_contender_each_round():
    calls = {"a": 0, "b": 0}
    samples = interleaved({name: (lambda n=name: calls.__setitem__(n, calls[n] + 1)) for name in calls}, 3, 0.0)
    assert [len(v) for v in samples.values()] == [3, 3] and calls == {"a": 4, "b": 4}  # warm-up + 3 rounds


def test_the_report_has_a_row_and_a_section_per_claim():
    results = [
        ClaimResult(
            n,
            f"claim {n}",
            "pub",
            f"rep {n}",
            REPRODUCED if n % 2 else NEEDS_FULL_DATA,
            "why",
            f"cmd {n}",
            details=["| a |"],
        )
        for n in (3, 1, 2)
    ]
    info = report.RunInfo(
        "quick",
        "python -m experiments.tutorial.reproduce",
        "data.csv",
        "note",
        "sqlite:///x",
        "run1",
        "commit `abc` (uncommitted changes: no), code hash `def`",
        "today",
        "load 1.0",
        2.5,
    )
    text = report.render(results, info)
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "rep " in line] == [
        "3",
        "1",
        "2",
    ]
    assert text.index("## 1. claim 1") < text.index("## 2. claim 2") < text.index("## 3. claim 3")
    assert "**needs the full file**" in text and "`cmd 2`" in text
    assert "at\ncommit `abc` (uncommitted changes: no), code hash `def`." in text


@pytest.mark.slow
@pytest.mark.skipif(not EXCERPT.is_file(), reason=f"the reddit excerpt is not at {EXCERPT}")
def test_make_reproduce_on_a_tiny_configuration(tmp_path):
    """Every claim on the real excerpt, with a 300-word vocabulary (UNKNOWN_TOKEN common) and H=10."""
    overrides = (
        f"overrides=['model.hidden_dim=10','dataset.vocab_size=300','train.checkpoint_dir={tmp_path}/checkpoints']"
    )
    command = [
        sys.executable,
        "-m",
        "experiments.tutorial.reproduce",
        f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"report_dir={tmp_path}/report",
        f"dataset_path={EXCERPT}",
        overrides,
        "mode.timing_vocab_size=300",
        "mode.timing_hidden_dim=10",
        "mode.step_rounds=2",
        "mode.round_seconds=0",
        "mode.epoch_sample=3",
        "mode.epoch_repeats=1",
        "mode.engine_sample=3",
        "mode.engine_repeats=1",
        "mode.samples=3",
    ]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    text = (tmp_path / "report" / "REPORT.md").read_text()
    for number in range(1, 11):
        assert f"\n## {number}. " in text and f"\n| {number} | " in text
    assert {p.name for p in (tmp_path / "report").glob("*.png")} == {"step_time.png", "sgd_curve.png", "epoch_time.png"}

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tutorial").experiment_id
    claims = {
        run.info.run_name: run for run in client.search_runs([experiment]) if run.info.run_name.startswith("claim-")
    }
    assert len(claims) == 10 and all(run.info.status == "FINISHED" for run in claims.values())
    untrained = claims["claim-untrained_loss"].data.metrics
    assert untrained["max_abs_gap"] < 0.01 and abs(untrained["loss_engine"] - math.log(300)) < 0.01
    assert claims["claim-gradient_check"].data.metrics["max_rel_error_wildml_check"] < published.GRADCHECK_THRESHOLD
    curve = claims["claim-sgd_curve"].data.metrics
    assert abs(curve["loss_start"] - math.log(300)) < 0.05 and curve["loss_end"] < curve["loss_start"] - 0.1
    sampled = claims["claim-samples"].data.metrics
    assert sampled["samples"] == 3 and sampled["samples_with_unknown"] == 0 and sampled["unknown_probability"] > 0.01
    assert claims["claim-data"].data.params["verdict"] == NEEDS_FULL_DATA


def test_the_engine_halves_its_rate_where_wildmls_loop_does():
    sentences = [np.random.default_rng(i).integers(0, 30, 10) for i in range(12)]
    losses, rates = extra_claims.engine_with_halving(sentences, 30, lr=1.0, hidden_dim=8)
    wildml = literal.train_with_sgd(literal.tutorial_model(30, 8), sentences, 1.0, extra_claims.HALVING_EPOCHS, 1)
    assert max(abs(a - b) for a, b in zip(losses, wildml)) < 1e-6
    rises = [b > a for a, b in zip(losses, losses[1:])]
    assert any(rises)  # the rate is high enough that the loss rises, so the halving is exercised
    assert rates == [0.5 ** sum(rises[:i]) for i in range(len(losses))] == extra_claims.wildml_rates(losses, 1.0)


def test_the_seen_bigram_share_tells_a_trained_writer_from_noise():
    training = [np.array([0, 5, 6, 7, 1]), np.array([0, 5, 7, 1])]
    bigrams = samples.training_bigrams(training)
    assert samples.seen_bigram_share([[5, 6, 7, 1]], bigrams, 0) == 1.0
    assert samples.seen_bigram_share([[6, 5, 9, 1]], bigrams, 0) == 0.0
    assert samples.seen_bigram_share([[5, 9]], bigrams, 0) == 0.5
