"""Claim 3: backpropagation through time passes the tutorial's gradient check.

Two checks. WildML's, as written: central differences of the summed loss with h=0.001, the
relative error |a - n| / (|a| + |n|) per entry under 0.01, on x=[0,1,2,3], y=[1,2,3,4], for the
tutorial's own code and for the engine. With four words, truncating at 4 steps (or at WildML's
1000) changes nothing, so the engine is also checked exactly by `rnnexp.check_gradients` on a longer
sentence, against the objective each truncation really differentiates.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from experiments.tutorial import literal, published
from experiments.tutorial.result import NOT_REPRODUCED, REPRODUCED, ClaimResult, markdown_table
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.gradcheck import relative_errors
from rnnexp.engine.reference.tutorial import GateRNN

EXACT_TOLERANCE = 1e-6  # rnnexp.check_gradients's threshold, at eps 1e-5
EXACT_LENGTH = 12  # long enough that a 4-step truncation cuts the gradient
PARAMS = ("U", "V", "W")


def wildml_relative_errors(
    params: dict[str, np.ndarray], gradients: dict[str, np.ndarray], summed_loss: Callable[[], float], h: float
) -> dict[str, float]:
    """WildML's gradient_check: the largest relative error of each parameter (0/0 counts as 0)."""
    worst = {}
    for name in PARAMS:
        p, largest = params[name], 0.0
        for ix in np.ndindex(p.shape):
            original = p[ix]
            p[ix] = original + h
            plus = summed_loss()
            p[ix] = original - h
            minus = summed_loss()
            p[ix] = original
            estimate, analytic = (plus - minus) / (2 * h), gradients[name][ix]
            scale = abs(analytic) + abs(estimate)
            largest = max(largest, abs(analytic - estimate) / scale if scale else 0.0)
        worst[name] = largest
    return worst


def check_wildml(x, y, truncate: int) -> dict[str, float]:
    model = literal.tutorial_model(published.GRADCHECK_VOCAB, published.GRADCHECK_HIDDEN, truncate)
    dU, dV, dW = model.bptt(x, y)

    def loss() -> float:
        o, _ = model.forward_propagation(x)
        return -float(np.log(o[np.arange(len(y)), y]).sum())

    params = {"U": model.U, "V": model.V, "W": model.W}
    return wildml_relative_errors(params, {"U": dU, "V": dV, "W": dW}, loss, published.GRADCHECK_H)


def check_gate(x, y, truncate: int) -> dict[str, float]:
    model = GateRNN(published.GRADCHECK_VOCAB, published.GRADCHECK_HIDDEN, truncate)
    weights = literal.tutorial_model(published.GRADCHECK_VOCAB, published.GRADCHECK_HIDDEN)
    model.U, model.W, model.V = weights.U, weights.W, weights.V
    dU, dW, dV = model.bptt(x, y)
    params = {"U": model.U, "V": model.V, "W": model.W}
    return wildml_relative_errors(
        params, {"U": dU, "V": dV, "W": dW}, lambda: model.calculate_loss(x, y) * len(y), published.GRADCHECK_H
    )


def check_engine(x, y, truncation: str, truncate: int) -> dict[str, float]:
    model = literal.with_tutorial_weights(
        build_model(
            ModelConfig(
                hidden_dim=published.GRADCHECK_HIDDEN, bptt_truncate=truncate, truncation=truncation, dtype="float64"
            ),
            published.GRADCHECK_VOCAB,
            None,
        )
    )
    gradients = model.backprop(x, y, reduction="sum").grads
    return wildml_relative_errors(
        model.params, gradients, lambda: float(model.token_nll(x, y)[0].sum()), published.GRADCHECK_H
    )


def gradient_check(seed: int, command: str) -> ClaimResult:
    x, y = np.array(published.GRADCHECK_X), np.array(published.GRADCHECK_Y)
    k = published.GRADCHECK_WILDML_TRUNCATE
    wildml_rows = [
        (f"WildML RNNNumpy, bptt_truncate={k} (the published check)", check_wildml(x, y, k)),
        ("WildML RNNNumpy, bptt_truncate=4", check_wildml(x, y, 4)),
        ("gate-based RNN, bptt_truncate=4", check_gate(x, y, 4)),
        (f"engine, window, bptt_truncate={k}", check_engine(x, y, "window", k)),
        ("engine, window, bptt_truncate=4", check_engine(x, y, "window", 4)),
        ("engine, full BPTT", check_engine(x, y, "full", 4)),
    ]
    rng = np.random.default_rng(seed)
    long_x, long_y = rng.integers(0, published.GRADCHECK_VOCAB, (2, EXACT_LENGTH))
    exact_rows = []
    for truncation, k_exact in (("window", 4), ("full", 4), ("chunk", 4)):
        model = build_model(
            ModelConfig(
                hidden_dim=published.GRADCHECK_HIDDEN, bptt_truncate=k_exact, truncation=truncation, dtype="float64"
            ),
            published.GRADCHECK_VOCAB,
            seed,
        )
        exact_rows.append(
            (
                f"engine, {truncation}" + ("" if truncation == "full" else f", bptt_truncate={k_exact}"),
                relative_errors(model, long_x, long_y),
            )
        )
    wildml_ok = all(max(e.values()) < published.GRADCHECK_THRESHOLD for _, e in wildml_rows)
    exact_ok = all(max(e.values()) < EXACT_TOLERANCE for _, e in exact_rows)

    def table(rows, threshold):
        body = [
            [name, *(f"{errors[p]:.1e}" for p in PARAMS), "pass" if max(errors.values()) < threshold else "FAIL"]
            for name, errors in rows
        ]
        return markdown_table(["implementation", *(f"max rel. error d{p}" for p in PARAMS), "verdict"], body)

    worst_wildml = max(max(e.values()) for _, e in wildml_rows)
    worst_exact = max(max(e.values()) for _, e in exact_rows)
    return ClaimResult(
        number=3,
        source=published.WILDML,
        title="Backpropagation through time passes the gradient check",
        published=f"passes (V={published.GRADCHECK_VOCAB}, H={published.GRADCHECK_HIDDEN}, h={published.GRADCHECK_H}, "
        f"threshold {published.GRADCHECK_THRESHOLD})",
        reproduced=f"passes: largest WildML-style error {worst_wildml:.1e}; exact check {worst_exact:.1e}",
        verdict=REPRODUCED if wildml_ok and exact_ok else NOT_REPRODUCED,
        reason=(
            "WildML's check passes for the tutorial's code and the engine, in the tutorial's truncation and in "
            "full BPTT. On x=[0,1,2,3] truncating at 4 (or 1000) steps cuts nothing, so the exact check on a "
            f"{EXACT_LENGTH}-word sentence is the one that tells truncation from full BPTT."
        ),
        command=command,
        details=[
            f"WildML's check: x={list(published.GRADCHECK_X)}, y={list(published.GRADCHECK_Y)}, the summed loss, "
            f"h={published.GRADCHECK_H}, threshold {published.GRADCHECK_THRESHOLD}; weights from np.random.seed(10).",
            table(wildml_rows, published.GRADCHECK_THRESHOLD),
            f"Exact check (`rnnexp.engine.gradcheck.relative_errors`, eps 1e-5, threshold {EXACT_TOLERANCE:g}) on "
            f"{EXACT_LENGTH} random words, against the objective each truncation differentiates:",
            table(exact_rows, EXACT_TOLERANCE),
        ],
        metrics={"max_rel_error_wildml_check": worst_wildml, "max_rel_error_exact_check": worst_exact},
        params={"h": str(published.GRADCHECK_H), "threshold": str(published.GRADCHECK_THRESHOLD)},
    )
