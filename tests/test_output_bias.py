"""`model.output_bias`: a bias on the output logits, as word_language_model's decoder has, for every cell and output."""

from __future__ import annotations

import numpy as np
import pytest

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model

V, H = 12, 5


def model(cell: str, output: str = "softmax", tie: bool = False, bias: bool = True):
    cfg = ModelConfig(
        cell=cell, hidden_dim=H, bptt_truncate=3, truncation="full", dtype="float64",
        output=output, classes=3, tie_weights=tie, output_bias=bias,
    )
    counts = np.arange(V, 0, -1).astype(float)
    m = build_model(cfg, V, seed=3, counts=counts)
    rng = np.random.default_rng(7)
    for name in [n for n in m.params if n.endswith("b") and n in ("Vb", "Vcb")]:
        m.params[name][...] = rng.normal(0, 0.5, m.params[name].shape)  # away from zero, so a lost bias shows
    return m


def batch():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (2, 6)), rng.integers(0, V, (2, 6))
    mask = np.ones((2, 6), bool)
    mask[1, 4:] = False
    return x, y, mask


def test_without_the_knob_there_is_no_bias_and_with_it_the_bias_starts_at_zero():
    assert "Vb" not in model("lstm", bias=False).params
    fresh = build_model(
        ModelConfig(cell="gru", hidden_dim=H, bptt_truncate=3, truncation="full", output_bias=True), V, seed=0
    )
    assert np.array_equal(fresh.params["Vb"], np.zeros(V, np.float32))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_scores_are_the_literal_log_softmax_of_v_h_plus_b(cell):
    m = model(cell)
    x, y, mask = batch()
    nll, _ = m.token_nll(x, y, mask)
    states = m.hidden_states(x)
    logits = states @ m.params["V"].T + m.params["Vb"]
    logp = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    expected = -np.take_along_axis(logp, y[..., None], axis=2)[..., 0]
    np.testing.assert_allclose(nll, np.where(mask, expected, 0.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "cell, output, tie",
    [("rnn", "softmax", False), ("rnn", "class", False), ("gru", "softmax", False), ("lstm", "class", False),
     ("lstm", "softmax", True), ("lstm", "class", True)],
)
def test_gradients_of_every_parameter_equal_central_differences(cell, output, tie):
    m = model(cell, output, tie)
    x, y, mask = batch()
    step = m.backprop(x, y, mask)
    assert {"Vb", "Vcb"} & set(step.grads) == ({"Vb", "Vcb"} if output == "class" else {"Vb"})
    eps = 1e-6
    for name, value in m.params.items():
        grad = np.asarray(step.grads[name].toarray(V) if hasattr(step.grads[name], "toarray") else step.grads[name])
        for i in np.random.default_rng(0).choice(value.size, min(value.size, 8), replace=False):
            at = np.unravel_index(i, value.shape)
            keep = value[at]
            value[at] = keep + eps
            up = m.loss(x, y, mask)
            value[at] = keep - eps
            down = m.loss(x, y, mask)
            value[at] = keep
            assert grad[at] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9), (name, at)
