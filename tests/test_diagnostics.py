"""Diagnostics checked against direct computations on tiny models."""

import numpy as np
import pytest

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.training.diagnostics import gradient_norms, saturation, weight_spectrum


def loss_at(model, s, words, target):
    """-log o[target] after running `words` from hidden state s (the unrolled network, plainly)."""
    P = model.params
    for w in words:
        s = np.tanh(P["U"][:, w] + P["W"] @ s)
    logits = P["V"] @ s
    return float(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target])


def finite_difference_decay(model, x, y, k, eps=1e-6):
    norms = []
    states = model.hidden_states(x)[0]
    for t in range(k, len(x)):
        s = states[t - k]
        grad = np.zeros(model.H)
        for j in range(model.H):
            e = np.zeros(model.H)
            e[j] = eps
            grad[j] = (
                loss_at(model, s + e, x[t - k + 1 : t + 1], y[t]) - loss_at(model, s - e, x[t - k + 1 : t + 1], y[t])
            ) / (2 * eps)
        norms.append(np.linalg.norm(grad))
    return np.mean(norms)


def test_gradient_decay_equals_finite_differences_through_the_unrolled_network():
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=4, truncation="window", dtype="float64"), 15, 3)
    model.params["W"] *= 3.0  # a livelier recurrence, so deeper k still carry signal
    x, y = np.random.default_rng(0).integers(0, 15, (2, 9))
    decay = model.gradient_decay(x, y, max_depth=10)
    for k in range(9):
        assert decay[k] == pytest.approx(finite_difference_decay(model, x, y, k), rel=1e-7)
    assert np.isnan(decay[9]) and np.isnan(decay[10])  # no output lies 9 or more steps after a state


def test_gradient_decay_counts_only_real_outputs_of_a_padded_batch():
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=4, truncation="window", dtype="float64"), 15, 4)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 15, (2, 2, 7))
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3])
    batch = model.gradient_decay(x, y, mask, max_depth=3)
    k = 2
    per_row = [finite_difference_decay(model, x[0], y[0], k), finite_difference_decay(model, x[1, :4], y[1, :4], k)]
    counts = [7 - k, 4 - k]
    assert batch[k] == pytest.approx(np.dot(per_row, counts) / sum(counts), rel=1e-6)


def test_untrained_small_weights_make_the_gradient_vanish():
    model = build_model(ModelConfig(hidden_dim=20, bptt_truncate=4, truncation="window", dtype="float64"), 50, 0)
    x, y = np.random.default_rng(2).integers(0, 50, (2, 4, 30))
    decay = model.gradient_decay(x, y, max_depth=12)
    assert np.all(np.diff(decay) < 0)
    assert decay[12] / decay[0] < 1e-2  # about 0.6x per step back at this init


def test_weight_spectrum_saturation_and_gradient_norms():
    W = np.diag([0.5, -2.0, 1.0])
    assert weight_spectrum(W) == {"w_spectral_radius": 2.0, "w_max_singular_value": 2.0}
    states = np.array([[[0.995, 0.2], [-0.999, 0.0]]])
    assert saturation(states) == 0.5
    assert saturation(states, mask=[[True, False]]) == 0.5
    assert gradient_norms({"W": np.array([[3.0, 4.0]])}) == {"grad_norm_W": 5.0}
