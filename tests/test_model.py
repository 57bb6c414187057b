"""The engine against the tutorial's gate-based algorithm, batching, modes, inference and bad input."""

import numpy as np
import pytest

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.reference.tutorial import GateRNN, WildMLRNN
from rnnexp.engine.rnn import RNNLM
from rnnexp.errors import DivergedError, UserError


def twin(model: RNNLM, cls=GateRNN):
    """A reference model holding the same weights as `model`."""
    ref = cls(model.vocab_size, model.H, model.bptt_truncate)
    ref.U, ref.W, ref.V = (np.array(model.params[n], dtype=np.float64) for n in "UWV")
    return ref


def rel_err(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.mark.parametrize("truncate", [0, 1, 2, 3, 4, 5, 6, 7, 8, 40])
def test_window_gradients_equal_the_tutorials_gate_based_bptt(truncate):
    rng = np.random.default_rng(truncate)
    model = build_model(
        ModelConfig(hidden_dim=9, bptt_truncate=truncate, truncation="window", dtype="float64"), 40, truncate
    )
    ref = twin(model)
    for T in list(range(1, 31, 3)) + [30]:
        x, y = rng.integers(0, 40, (2, T))
        step = model.backprop(x, y, reduction="sum")
        dU, dW, dV = ref.bptt(x, y)
        assert step.loss == pytest.approx(ref.calculate_loss(x, y), rel=1e-12)
        assert rel_err(step.grads["U"], dU) < 1e-10
        assert rel_err(step.grads["V"], dV) < 1e-10
        if np.abs(dW).max() > 0:
            assert rel_err(step.grads["W"], dW) < 1e-10
        else:  # one token, or truncation 0 at t=0 only: no recurrent gradient at all
            assert np.abs(step.grads["W"]).max() < 1e-15


def test_the_oracle_agrees_with_wildml_numpy_code():
    rng = np.random.default_rng(1)
    gate = GateRNN(30, 6, bptt_truncate=3, seed=3)
    wild = WildMLRNN(30, 6, bptt_truncate=3)
    wild.U, wild.W, wild.V = gate.U, gate.W, gate.V
    x, y = rng.integers(0, 30, (2, 12))
    for a, b in zip(gate.bptt(x, y), (lambda g: (g[0], g[2], g[1]))(wild.bptt(x, y))):
        assert rel_err(a, b) < 1e-12


def test_mean_reduction_divides_the_summed_gradient_by_the_tokens():
    model = build_model(ModelConfig(hidden_dim=5, bptt_truncate=2, truncation="window", dtype="float64"), 20, 0)
    x, y = np.arange(7) % 20, (np.arange(7) + 3) % 20
    total = model.backprop(x, y, reduction="sum").grads
    _, mean = model.loss_and_grads(x, y)
    for name in "UWV":
        np.testing.assert_allclose(mean[name] * 7, total[name], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("truncation", ["window", "full"])
def test_padded_batch_equals_the_sum_of_its_sentences(truncation):
    rng = np.random.default_rng(2)
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=2, truncation=truncation, dtype="float64"), 25, 1)
    lengths = [5, 1, 9, 3]
    T = max(lengths)
    x = rng.integers(0, 25, (4, T))
    y = rng.integers(0, 25, (4, T))
    mask = np.arange(T) < np.array(lengths)[:, None]
    batch = model.backprop(x, y, mask=mask, reduction="sum")
    expected = {n: 0.0 for n in "UWV"}
    loss_sum = 0.0
    for row, n in enumerate(lengths):
        step = model.backprop(x[row, :n], y[row, :n], reduction="sum")
        loss_sum += step.loss * n
        for name in expected:
            expected[name] = expected[name] + step.grads[name]
        np.testing.assert_allclose(batch.h_last[row], step.h_last[0], rtol=1e-12)
    assert batch.n_tokens == sum(lengths)
    assert batch.loss == pytest.approx(loss_sum / sum(lengths), rel=1e-12)
    for name in expected:
        np.testing.assert_allclose(batch.grads[name], expected[name], rtol=1e-10, atol=1e-14)


def test_padding_tokens_do_not_matter():
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=3, truncation="window", dtype="float64"), 25, 1)
    x = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    y = np.array([[2, 3, 4, 0, 0], [5, 6, 7, 8, 9]])
    mask = x * 0 + (np.arange(5) < [[3], [5]])
    other_x, other_y = x.copy(), y.copy()
    other_x[0, 3:], other_y[0, 3:] = 24, 17
    a = model.backprop(x, y, mask=mask)
    b = model.backprop(other_x, other_y, mask=mask)
    assert a.loss == b.loss
    for name in "UWV":
        assert np.array_equal(a.grads[name], b.grads[name])


def test_window_beyond_the_sentence_is_full_bptt():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 30, (2, 11))
    window = build_model(
        ModelConfig(hidden_dim=7, bptt_truncate=10, truncation="window", dtype="float64"), 30, 4
    ).loss_and_grads(x, y)[1]
    full = build_model(
        ModelConfig(hidden_dim=7, bptt_truncate=1, truncation="full", dtype="float64"), 30, 4
    ).loss_and_grads(x, y)[1]
    for name in "UWV":
        np.testing.assert_allclose(window[name], full[name], rtol=1e-12)


def test_chunks_carry_the_hidden_state_and_stop_the_gradient():
    """Forward over chunks with carried state equals one forward pass; the gradient of each
    chunk ignores what came before it."""
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 30, (2, 12))
    model = build_model(ModelConfig(hidden_dim=7, bptt_truncate=4, truncation="chunk", dtype="float64"), 30, 5)
    whole = build_model(ModelConfig(hidden_dim=7, bptt_truncate=4, truncation="full", dtype="float64"), 30, 5)
    nll_whole, _ = whole.token_nll(x, y)
    h, nll = None, []
    for c0 in range(0, 12, 4):
        step = model.backprop(x[c0 : c0 + 4], y[c0 : c0 + 4], h0=h)
        nll.append(model.token_nll(x[c0 : c0 + 4], y[c0 : c0 + 4], h0=h)[0])
        if c0 == 8:  # the last chunk from the true carried state, as a fresh full-BPTT problem
            alone = whole.backprop(x[8:], y[8:], h0=h)
            np.testing.assert_allclose(step.grads["W"], alone.grads["W"], rtol=1e-12)
        h = step.h_last
    np.testing.assert_allclose(np.concatenate(nll, axis=1), nll_whole, rtol=1e-12)


def test_sparse_u_gradient_matches_dense():
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=4, truncation="window", dtype="float64"), 50, 0)
    x = np.array([[3, 7, 3, 9], [7, 7, 1, 0]])
    y = np.array([[1, 2, 3, 4], [5, 6, 7, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    dense = model.backprop(x, y, mask=mask).grads["U"]
    sparse = model.backprop(x, y, mask=mask, sparse_u=True).grads["U"]
    assert list(sparse.cols) == [1, 3, 7, 9]  # the padded 0 is not a column the batch used
    assert np.array_equal(sparse.toarray(50), dense)
    assert sparse.sum_sq() == pytest.approx(float((dense**2).sum()))


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 100, (2, 4, 80))  # 320 rows: two output blocks, the second added by gemm
    m64 = build_model(ModelConfig(hidden_dim=16, bptt_truncate=4, truncation="window", dtype="float64"), 100, 6)
    m32 = build_model(ModelConfig(hidden_dim=16, bptt_truncate=4, truncation="window", dtype="float32"), 100, 6)
    assert m32.params["U"].dtype == np.float32
    l64, g64 = m64.loss_and_grads(x, y)
    l32, g32 = m32.loss_and_grads(x, y)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name in "UWV":
        assert g32[name].dtype == np.float32
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-3, atol=1e-6)


def test_large_logits_take_the_shifted_softmax_and_stay_exact():
    model = build_model(ModelConfig(hidden_dim=4, bptt_truncate=4, truncation="window", dtype="float64"), 30, 0)
    model.params["V"] *= 400.0  # row sums of |V| far above exp's safe range
    ref = twin(model)
    x, y = np.array([1, 5, 2, 8]), np.array([5, 2, 8, 3])
    step = model.backprop(x, y, reduction="sum")
    assert np.isfinite(step.loss)
    assert step.loss == pytest.approx(np.mean([-np.log(p) for p in _ref_probs(ref, x, y)]), rel=1e-9)


def _ref_probs(ref, x, y):
    logits = [layer.mulv for layer in ref.forward_propagation(x)]
    return [np.exp(l[t] - l.max()) / np.exp(l - l.max()).sum() for l, t in zip(logits, y)]


def test_untrained_loss_is_the_loss_of_uniform_guessing():
    rng = np.random.default_rng(7)
    model = build_model(ModelConfig(hidden_dim=100, bptt_truncate=4, truncation="window", dtype="float64"), 8000, 10)
    x, y = rng.integers(0, 8000, (2, 4, 25))
    assert model.loss(x, y) == pytest.approx(np.log(8000), abs=0.01)


def test_predict_is_the_argmax_of_the_reference():
    model = build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 20, 2)
    x = np.array([4, 1, 9, 9, 0, 13])
    assert list(model.predict(x)) == twin(model).predict(x)
    assert model.predict(np.stack([x, x])).shape == (2, 6)


def test_sampling_never_yields_unknown_and_stops_at_the_end_token():
    model = build_model(ModelConfig(hidden_dim=4, bptt_truncate=4, truncation="window", dtype="float64"), 6, 0)
    model.params["V"][:] = 0.0
    model.params["V"][5] = 5.0  # token 5 (unknown) dominates every softmax
    rng = np.random.default_rng(0)
    words = model.sample(rng, start_id=0, end_id=1, unknown_id=5, max_len=200)
    assert 5 not in words and 0 not in words
    assert len(words) < 200  # the end token, allowed, eventually comes
    greedy = model.sample(rng, start_id=0, end_id=None, unknown_id=5, max_len=10, top_k=1)
    assert len(set(greedy)) == 1  # with V=0 elsewhere, all logits tie: top-1 picks the same word


def test_diverged_weights_raise_a_clear_error():
    model = build_model(ModelConfig(hidden_dim=3, bptt_truncate=4, truncation="window", dtype="float64"), 10, 0)
    model.params["W"][0, 0] = np.nan
    with pytest.raises(DivergedError, match="lower the learning rate"):
        model.backprop([1, 2, 3], [2, 3, 4])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.backprop([1, 2, 10], [1, 2, 3]), "token id 10, outside the vocabulary 0..9"),
        (lambda m: m.backprop([1, 2], [1, -1]), "token id -1"),
        (lambda m: m.backprop([], []), "empty"),
        (lambda m: m.backprop([1, 2, 3], [1, 2]), "same shape"),
        (lambda m: m.backprop([1.0, 2.0], [1, 2]), "integers"),
        (lambda m: m.backprop([[1, 2]], [[1, 2]], mask=[[0, 1]]), "prefix"),
        (lambda m: m.backprop([[1, 2]], [[1, 2]], mask=[[0, 0]]), "prefix|no real token"),
        (lambda m: m.backprop([1, 2], [1, 2], h0=np.zeros(4)), "h0 must have shape"),
        (lambda m: m.backprop([1, 2], [1, 2], reduction="max"), "reduction"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(UserError, match=message):
        call(build_model(ModelConfig(hidden_dim=3, bptt_truncate=4, truncation="window", dtype="float64"), 10, 0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocab_size": 1}, "vocab_size must be >= 2"),
        ({"hidden_dim": 0}, "model.hidden_dim must be >= 1"),
        ({"bptt_truncate": -1}, "model.bptt_truncate must be >= 0"),
        ({"truncation": "chunk", "bptt_truncate": 0}, "chunk mode"),
        ({"truncation": "sliding"}, "model.truncation must be one of"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_impossible_model_sizes_are_refused(kwargs, message):
    knobs = {"vocab_size": 10, "hidden_dim": 3, "bptt_truncate": 4, "truncation": "window", **kwargs}
    vocab_size = knobs.pop("vocab_size")
    with pytest.raises(UserError, match=message):
        build_model(ModelConfig(**knobs), vocab_size, 0)


def test_same_seed_same_weights_and_u_columns_are_contiguous():
    a, b = (
        build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 30, 3),
        build_model(ModelConfig(hidden_dim=5, bptt_truncate=4, truncation="window", dtype="float64"), 30, 3),
    )
    assert all(np.array_equal(a.params[n], b.params[n]) for n in "UWV")
    assert a.params["U"].shape == (5, 30) and a.params["U"].T.flags.c_contiguous
    bound = 1 / np.sqrt(30)
    assert np.abs(a.params["U"]).max() <= bound and np.abs(a.params["W"]).max() <= 1 / np.sqrt(5)


def test_worker_threads_split_the_output_layer_exactly_and_repeatably():
    rng = np.random.default_rng(8)
    x, y = rng.integers(0, 2048, (2, 4, 130))  # 520 rows x 2048 words: big enough for the workers
    one = build_model(
        ModelConfig(hidden_dim=8, bptt_truncate=4, truncation="window", dtype="float64"), 2048, 1, threads=1
    ).backprop(x, y)
    two_model = build_model(
        ModelConfig(hidden_dim=8, bptt_truncate=4, truncation="window", dtype="float64"), 2048, 1, threads=2
    )
    two, again = two_model.backprop(x, y), two_model.backprop(x, y)
    assert two.loss == one.loss
    assert np.array_equal(two.grads["U"], one.grads["U"]) and np.array_equal(two.grads["W"], one.grads["W"])
    np.testing.assert_allclose(two.grads["V"], one.grads["V"], rtol=1e-12, atol=1e-18)
    assert all(np.array_equal(two.grads[n], again.grads[n]) for n in "UWV")
