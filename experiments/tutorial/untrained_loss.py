"""Claim 2: an untrained model predicts uniformly, so its loss is ln V."""

from __future__ import annotations

import math

from experiments.tutorial import literal, published
from experiments.tutorial.result import NOT_REPRODUCED, REPRODUCED, ClaimResult, markdown_table
from rnnexp.config.schema import ModelConfig
from rnnexp.data import Corpus
from rnnexp.engine import build_model
from rnnexp.engine.rnn import RNNLM
from rnnexp.training.evaluation import sentence_loss

TOLERANCE = 0.01  # nats: the published measurement is 0.0002 above ln V
LITERAL_SENTENCES = 100  # WildML's own forward pass is slow at V=8000: cross-check it on these
EVAL_BATCH = 256


def untrained_loss(corpus: Corpus, hidden_dim: int, bptt_truncate: int, command: str) -> ClaimResult:
    sentences = corpus.splits["train"].sentences[: published.UNTRAINED_SENTENCES]
    vocab_size = len(corpus.vocab)

    def tutorial_init(v: int) -> RNNLM:
        return literal.with_tutorial_weights(
            build_model(
                ModelConfig(hidden_dim=hidden_dim, bptt_truncate=bptt_truncate, truncation="window", dtype="float64"),
                v,
                None,
            )
        )

    own = build_model(
        ModelConfig(hidden_dim=hidden_dim, bptt_truncate=bptt_truncate, truncation="window", dtype="float64"),
        vocab_size,
        published.UNTRAINED_SEED,
    )
    tutorial_8000 = tutorial_init(published.VOCABULARY_SIZE)
    measured = [
        ("engine, its own init (default_rng(10))", vocab_size, sentence_loss(own, sentences, EVAL_BATCH)),
        (
            "engine, the tutorial's init (np.random.seed(10))",
            vocab_size,
            sentence_loss(tutorial_init(vocab_size), sentences, EVAL_BATCH),
        ),
        (
            "engine, the tutorial's init, V = 8000",
            published.VOCABULARY_SIZE,
            sentence_loss(tutorial_8000, sentences, EVAL_BATCH),
        ),
    ]
    first = sentences[:LITERAL_SENTENCES]
    wildml = literal.calculate_loss(literal.as_wildml(tutorial_8000), first)
    engine_first = sentence_loss(tutorial_8000, first, EVAL_BATCH)
    rows = [
        [
            "published: WildML RNNNumpy, np.random.seed(10)",
            f"{published.VOCABULARY_SIZE:,}",
            f"{published.MEASURED_UNTRAINED_LOSS:.6f}",
            f"{published.EXPECTED_LOSS:.6f}",
            f"{published.MEASURED_UNTRAINED_LOSS - published.EXPECTED_LOSS:+.6f}",
        ]
    ]
    rows += [
        [name, f"{v:,}", f"{loss:.6f}", f"{math.log(v):.6f}", f"{loss - math.log(v):+.6f}"]
        for name, v, loss in measured
    ]
    worst = max(abs(loss - math.log(v)) for _, v, loss in measured)
    engine_loss, headline = measured[0][2], measured[2][2]
    return ClaimResult(
        number=2,
        source=published.WILDML,
        title="The untrained model's loss is that of random predictions, ln V",
        published=f"{published.MEASURED_UNTRAINED_LOSS:.6f} measured vs ln 8000 = {published.EXPECTED_LOSS:.6f}",
        reproduced=(
            f"{headline:.6f} vs ln 8000 (tutorial init); {engine_loss:.6f} vs ln {vocab_size:,} = "
            f"{math.log(vocab_size):.6f} (engine)"
        ),
        verdict=REPRODUCED if worst < TOLERANCE else NOT_REPRODUCED,
        reason=(
            f"every variant lies within {worst:.4f} nats of its ln V (tolerance {TOLERANCE}), on the first "
            f"{len(sentences):,} sentences. The digits after the fourth decimal depend on the sentences (ours "
            "are from the excerpt, whose vocabulary is the excerpt's), not on the model."
        ),
        command=command,
        details=[
            markdown_table(["model", "V", "loss", "ln V", "loss − ln V"], rows),
            f"WildML's literal forward pass and loss (its `RNNNumpy`, the same weights) on the first {len(first)} "
            f"sentences: {wildml:.9f}; the engine on them: {engine_first:.9f} "
            f"(difference {abs(wildml - engine_first):.1e}).",
        ],
        metrics={
            "loss_engine": engine_loss,
            "loss_tutorial_init": measured[1][2],
            "loss_v8000": headline,
            "loss_wildml_literal_first": wildml,
            "ln_v": math.log(vocab_size),
            "max_abs_gap": worst,
        },
        params={"sentences": str(len(sentences)), "hidden_dim": str(hidden_dim), "seed": str(published.UNTRAINED_SEED)},
    )
