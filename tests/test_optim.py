"""Optimisers: sparse updates equal dense ones, and each rule matches its textbook formula."""

import numpy as np
import pytest

from rnnexp.config import OptimConfig
from rnnexp.config.schema import OPTIMIZERS, ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.optim import clip_global_norm, make_optimizer
from rnnexp.errors import UserError


def batch(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 40, (2, 3, 6))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sparse_u_updates_equal_dense_updates(name):
    dense_model, sparse_model = (
        build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 40, 0),
        build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 40, 0),
    )
    dense_opt, sparse_opt = make_optimizer(name), make_optimizer(name)
    for seed in range(4):
        x, y = batch(seed)
        dense_opt.step(dense_model.params, dense_model.backprop(x, y).grads, lr=0.05)
        sparse_opt.step(sparse_model.params, sparse_model.backprop(x, y, sparse_u=True).grads, lr=0.05)
    for n in "UWV":
        np.testing.assert_allclose(sparse_model.params[n], dense_model.params[n], rtol=1e-12, atol=1e-15)
    assert dense_model.params["U"].flags.f_contiguous


def test_adam_matches_the_textbook_formula():
    p = {"W": np.array([[1.0, -2.0]])}
    grads = [np.array([[0.5, -1.0]]), np.array([[0.1, 0.3]])]
    opt = make_optimizer(OptimConfig(name="adam", beta1=0.9, beta2=0.99, eps=1e-8))
    m = v = np.zeros((1, 2))
    expected = p["W"].copy()
    for t, g in enumerate(grads, start=1):
        opt.step(p, {"W": g.copy()}, lr=0.1)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        expected -= 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
    np.testing.assert_allclose(p["W"], expected, rtol=1e-14)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sgd", 1.0 - 0.1 * 2.0),
        ("momentum", 1.0 - 0.1 * 2.0),
        ("adagrad", 1.0 - 0.1 * 2.0 / (2.0 + 1e-8)),
        ("rmsprop", 1.0 - 0.1 * 2.0 / (np.sqrt(0.1 * 4.0) + 1e-8)),
    ],
)
def test_first_step_of_each_rule(name, expected):
    p = {"W": np.ones((1, 1))}
    make_optimizer(name).step(p, {"W": np.full((1, 1), 2.0)}, lr=0.1)
    assert p["W"][0, 0] == pytest.approx(expected, rel=1e-12)


def test_state_round_trips_through_a_dict_of_arrays():
    model_a, model_b = (
        build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 40, 1),
        build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 40, 1),
    )
    opt_a = make_optimizer("adam")
    x, y = batch(0)
    opt_a.step(model_a.params, model_a.backprop(x, y, sparse_u=True).grads, lr=0.01)
    for n in "UWV":
        model_b.params[n][...] = model_a.params[n]
    opt_b = make_optimizer("adam")
    opt_b.load_state_dict({k: v.copy() for k, v in opt_a.state_dict().items()})
    x, y = batch(1)
    opt_a.step(model_a.params, model_a.backprop(x, y, sparse_u=True).grads, lr=0.01)
    opt_b.step(model_b.params, model_b.backprop(x, y, sparse_u=True).grads, lr=0.01)
    assert all(np.array_equal(model_a.params[n], model_b.params[n]) for n in "UWV")


def test_clipping_scales_all_gradients_to_the_global_norm():
    model = build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 40, 2)
    x, y = batch(2)
    grads = model.backprop(x, y, sparse_u=True).grads
    dense = [g.toarray(40) if n == "U" else g for n, g in grads.items()]
    before = np.sqrt(sum(float((g**2).sum()) for g in dense))
    assert clip_global_norm(grads, max_norm=before / 4) == pytest.approx(before)
    assert clip_global_norm(grads, max_norm=None) == pytest.approx(before / 4)


def test_unknown_optimiser_is_refused():
    with pytest.raises(UserError, match="choose one of sgd, momentum"):
        make_optimizer("lbfgs")


def test_the_running_average_is_the_mean_of_the_iterates_and_round_trips():
    model = build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 40, 2)
    opt = make_optimizer("sgd")
    assert opt.average() is None
    iterates = []
    for seed in range(5):
        x, y = batch(seed)
        opt.step(model.params, model.backprop(x, y, sparse_u=True).grads, lr=0.5)
        opt.accumulate_average(model.params)
        iterates.append({n: model.params[n].copy() for n in "UWV"})
    average = opt.average()
    for n in "UWV":
        np.testing.assert_allclose(average[n], np.mean([it[n] for it in iterates], axis=0), rtol=1e-12, atol=1e-15)
    assert not np.allclose(average["W"], model.params["W"])  # the mean is not the last iterate
    restored = make_optimizer("sgd")
    restored.load_state_dict(opt.state_dict())
    assert all(np.array_equal(restored.average()[n], average[n]) for n in "UWV")
