"""The GRU and LSTM against their gate-by-gate reference and central differences; batching, dropout, inference."""

import subprocess
import sys

import numpy as np
import pytest

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import RNNLM, GatedLM, build_model
from rnnexp.engine.gradcheck import relative_errors
from rnnexp.engine.reference.gated import GateByGateLM
from rnnexp.errors import DivergedError, UserError

CELLS = ["lstm", "gru"]


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def model(cell: str, vocab: int = 11, hidden: int = 5, seed: int = 0, spread: float = 0.5, **kwargs) -> GatedLM:
    """A float64 model with every parameter (biases included) drawn at random, so no term is zero."""
    threads = kwargs.pop("threads", None)
    knobs = {"bptt_truncate": 4, "truncation": "window", **kwargs}
    m = build_model(ModelConfig(cell=cell, hidden_dim=hidden, dtype="float64", **knobs), vocab, seed, threads=threads)
    rng = np.random.default_rng(seed + 100)
    for p in m.params.values():
        p[...] = rng.uniform(-spread, spread, p.shape)
    return m


def reference_sum(m: GatedLM, x, y, depth, masks=None, h0=None) -> dict:
    """The reference's summed-loss gradients of a batch, sentence by sentence."""
    ref, total = GateByGateLM.like(m), None
    for b in range(x.shape[0]):
        row_masks = None if masks is None else ([mk[:, b] for mk in masks.inputs], masks.output[:, b])
        g = ref.bptt(x[b], y[b], None if h0 is None else h0[b], row_masks, depth)
        total = g if total is None else {n: total[n] + g[n] for n in total}
    return total


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("truncation", "truncate"), [("window", 0), ("window", 1), ("window", 3), ("full", 2)])
@pytest.mark.parametrize(("layers", "tied"), [(1, False), (2, False), (1, True)])
def test_gradients_equal_the_gate_by_gate_reference(cell, truncation, truncate, layers, tied):
    m = model(cell, layers=layers, tie_weights=tied, bptt_truncate=truncate, truncation=truncation, seed=truncate)
    rng = np.random.default_rng(truncate)
    worst = 0.0
    for T in (1, 2, 5, 9):
        x, y = rng.integers(0, 11, (2, 3, T))
        step = m.backprop(x, y, reduction="sum")
        expected = reference_sum(m, x, y, truncate if truncation == "window" else None)
        ref = GateByGateLM.like(m)
        assert step.loss * x.size == pytest.approx(sum(ref.calculate_loss(a, b) for a, b in zip(x, y)), rel=1e-12)
        assert set(step.grads) == set(m.params) == set(expected)
        worst = max(worst, *(rel_err(step.grads[n], expected[n]) for n in expected if np.abs(expected[n]).max() > 0))
        for n in expected:  # a gradient the reference has as zero (one token, no recurrence) is zero here too
            if not np.abs(expected[n]).any():
                assert not np.abs(step.grads[n]).any()
    assert worst < 1e-10


@pytest.mark.parametrize("cell", CELLS)
def test_chunks_carry_the_whole_state_and_stop_the_gradient_at_the_border(cell):
    m = model(cell, layers=2, bptt_truncate=4, truncation="chunk", seed=3)
    ref = GateByGateLM.like(m)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 11, (2, 2, 12))
    h, h_ref = None, [None, None]
    for c0 in range(0, 12, 4):
        xs, ys = x[:, c0 : c0 + 4], y[:, c0 : c0 + 4]
        step = m.backprop(xs, ys, h0=h, reduction="sum")
        expected = reference_sum(m, xs, ys, None, h0=None if h is None else np.stack(h_ref))
        assert max(rel_err(step.grads[n], expected[n]) for n in expected) < 1e-10
        h_ref = [ref.run(h_ref[b], xs[b]) for b in range(2)]
        assert step.h_last.shape == (2, m.state_size) == (2, 2 * 5 * (2 if cell == "lstm" else 1))
        np.testing.assert_allclose(step.h_last, np.stack(h_ref), rtol=1e-12, atol=1e-15)
        nll, state = m.token_nll(xs, ys, h0=h)
        np.testing.assert_array_equal(state, step.h_last)
        h = step.h_last


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("truncation", ["window", "chunk", "full"])
@pytest.mark.parametrize(("layers", "tied"), [(1, False), (2, False), (1, True)])
def test_every_parameter_passes_central_differences(cell, truncation, layers, tied):
    m = model(
        cell, vocab=7, hidden=3, layers=layers, tie_weights=tied, bptt_truncate=2, truncation=truncation, seed=layers
    )
    x, y = np.random.default_rng(layers).integers(0, 7, (2, 7))
    errors = relative_errors(m, x, y)
    assert set(errors) == set(m.params)
    assert max(errors.values()) < 1e-6


def test_central_differences_reject_a_wrong_truncation():
    """The window objective must reject the full gradient: the check can fail."""
    x, y = np.random.default_rng(0).integers(0, 7, (2, 7))
    m = model("lstm", vocab=7, hidden=3, bptt_truncate=1, truncation="window")
    full = model("lstm", vocab=7, hidden=3, truncation="full")
    m.loss_and_grads = full.loss_and_grads
    assert relative_errors(m, x, y)["lstm0_Wh"] > 1e-3


@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_equals_the_sum_of_its_sentences(cell):
    rng = np.random.default_rng(2)
    m = model(cell, vocab=25, hidden=6, layers=2, bptt_truncate=2, truncation="window")
    lengths = [5, 1, 9, 3]
    x, y = rng.integers(0, 25, (2, 4, 9))
    mask = np.arange(9) < np.array(lengths)[:, None]
    batch = m.backprop(x, y, mask=mask, reduction="sum")
    expected, loss_sum = None, 0.0
    for row, n in enumerate(lengths):
        step = m.backprop(x[row, :n], y[row, :n], reduction="sum")
        loss_sum += step.loss * n
        expected = step.grads if expected is None else {k: expected[k] + step.grads[k] for k in expected}
        np.testing.assert_allclose(batch.h_last[row], step.h_last[0], rtol=1e-12)
    assert batch.n_tokens == sum(lengths)
    assert batch.loss == pytest.approx(loss_sum / sum(lengths), rel=1e-12)
    for name in expected:
        np.testing.assert_allclose(batch.grads[name], expected[name], rtol=1e-10, atol=1e-14)
    other_x, other_y = x.copy(), y.copy()
    other_x[~mask], other_y[~mask] = 24, 17  # what the padding holds does not matter
    again = m.backprop(other_x, other_y, mask=mask, reduction="sum")
    assert again.loss == batch.loss and all(np.array_equal(again.grads[n], batch.grads[n]) for n in expected)


@pytest.mark.parametrize("cell", CELLS)
def test_a_window_beyond_the_sentence_is_full_bptt_and_float32_agrees(cell):
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 30, (2, 3, 11))
    window = model(cell, vocab=30, bptt_truncate=10, truncation="window", seed=4).loss_and_grads(x, y)[1]
    full = model(cell, vocab=30, truncation="full", seed=4)
    for name, g in full.loss_and_grads(x, y)[1].items():
        np.testing.assert_allclose(window[name], g, rtol=1e-12)
    m32 = build_model(ModelConfig(cell=cell, hidden_dim=5, bptt_truncate=4, truncation="full", dtype="float32"), 30, 4)
    for name, p in full.params.items():
        m32.params[name][...] = p
    loss32, g32 = m32.loss_and_grads(x, y)
    assert loss32 == pytest.approx(full.loss(x, y), rel=1e-5)
    for name, g in full.loss_and_grads(x, y)[1].items():
        assert g32[name].dtype == np.float32
        np.testing.assert_allclose(g32[name], g, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_the_sparse_embedding_gradient_is_the_dense_one_and_tied_weights_make_it_dense(cell):
    m = model(cell, vocab=50, hidden=6)
    x = np.array([[3, 7, 3, 9], [7, 7, 1, 0]])
    y = np.array([[1, 2, 3, 4], [5, 6, 7, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    dense = m.backprop(x, y, mask=mask).grads["U"]
    sparse = m.backprop(x, y, mask=mask, sparse_u=True).grads["U"]
    assert list(sparse.cols) == [1, 3, 7, 9]  # the padded 0 is not a column the batch used
    assert np.array_equal(sparse.toarray(50), dense) and sparse.sum_sq() == pytest.approx(float((dense**2).sum()))
    assert m.params["U"].flags.f_contiguous and m.params["U"].shape == (6, 50)
    tied = model(cell, vocab=50, hidden=6, tie_weights=True)
    grad = tied.backprop(x, y, mask=mask, sparse_u=True).grads["U"]
    assert isinstance(grad, np.ndarray) and grad.shape == (6, 50) and np.count_nonzero(grad[:, 20]) == 6
    assert "V" not in tied.params
    np.testing.assert_allclose(tied.output.logits(np.ones(6)), tied.params["U"].T @ np.ones(6), rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_is_off_in_evaluation_and_its_masks_are_reproducible(cell):
    x, y = np.random.default_rng(5).integers(0, 20, (2, 4, 8))
    dropped = model(cell, vocab=20, layers=2, dropout=0.4, truncation="full", seed=5)
    plain = model(cell, vocab=20, layers=2, truncation="full", seed=5)
    assert np.array_equal(dropped.token_nll(x, y)[0], plain.token_nll(x, y)[0])
    assert np.array_equal(dropped.hidden_states(x), plain.hidden_states(x))
    assert plain.dropout_masks(x, y) is None

    masks = dropped.dropout_masks(x, y)
    assert [mk.shape for mk in (*masks.inputs, masks.output)] == [(8, 4, 5)] * 3
    assert set(np.unique(masks.output)) == {0.0, 1 / 0.6}
    assert 0.3 < float((masks.output == 0).mean()) < 0.5
    step = dropped.backprop(x, y)
    assert step.loss != pytest.approx(plain.backprop(x, y).loss)
    again = dropped.backprop(x, y, dropout=masks)
    assert again.loss == step.loss and all(np.array_equal(again.grads[n], step.grads[n]) for n in step.grads)
    twin = model(cell, vocab=20, layers=2, dropout=0.4, truncation="full", seed=5)  # a model restored bitwise
    assert twin.backprop(x, y).loss == step.loss
    dropped.params[dropped.prefixes[0] + "_b"][0] += 1e-3  # any update draws new masks
    assert not np.array_equal(dropped.dropout_masks(x, y).output, masks.output)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("truncation", "truncate"), [("window", 2), ("full", 3)])
def test_the_gradient_under_fixed_dropout_masks_equals_the_reference_with_them(cell, truncation, truncate):
    m = model(cell, vocab=13, layers=2, dropout=0.3, bptt_truncate=truncate, truncation=truncation, seed=7)
    x, y = np.random.default_rng(7).integers(0, 13, (2, 3, 8))
    masks = m.dropout_masks(x, y)
    step = m.backprop(x, y, reduction="sum", dropout=masks)
    expected = reference_sum(m, x, y, truncate if truncation == "window" else None, masks)
    assert max(rel_err(step.grads[n], expected[n]) for n in expected) < 1e-10
    unmasked = reference_sum(m, x, y, truncate if truncation == "window" else None)
    assert rel_err(step.grads["V"], unmasked["V"]) > 1e-2  # the masks did change the gradient
    ref = GateByGateLM.like(m)  # the carried state is the training pass's, dropout included (as PyTorch carries it)
    for b in range(3):
        steps = ref.forward_propagation(x[b], None, ([mk[:, b] for mk in masks.inputs], masks.output[:, b]))
        np.testing.assert_allclose(step.h_last[b], ref.join_state(steps[-1].states()), rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_decay_is_the_norm_of_the_error_at_the_whole_state(cell):
    """Against central differences of L_t in the state at t-k, every layer's h and c, through the reference."""
    m = model(cell, vocab=9, hidden=3, layers=2, truncation="window", bptt_truncate=1, spread=0.8, seed=9)
    x, y = np.random.default_rng(9).integers(0, 9, (2, 1, 6))
    decay = m.gradient_decay(x, y, max_depth=7)
    ref = GateByGateLM.like(m)
    states = [np.zeros(m.state_size)]
    for w in x[0]:
        states.append(ref.run(states[-1], [w]))
    eps = 1e-6
    for k in range(6):
        norms = []
        for t in range(k, 6):

            def loss_t(state, t=t, k=k):
                return ref.nll(ref.run(state, x[0, t - k + 1 : t + 1]), y[0, t])

            base = states[t - k + 1]
            grad = [(loss_t(base + eps * e) - loss_t(base - eps * e)) / (2 * eps) for e in np.eye(m.state_size)]
            norms.append(np.linalg.norm(grad))
        assert decay[k] == pytest.approx(np.mean(norms), rel=1e-6)
    assert np.isnan(decay[6:]).all()  # no output has 6 or 7 steps behind it


@pytest.mark.parametrize("cell", CELLS)
def test_untrained_loss_is_uniform_guessing_and_prediction_and_sampling_work(cell):
    rng = np.random.default_rng(7)
    m = build_model(ModelConfig(cell=cell, hidden_dim=32, bptt_truncate=4, truncation="window"), 2000, 10)
    x, y = rng.integers(0, 2000, (2, 4, 25))
    assert m.loss(x, y) == pytest.approx(np.log(2000), abs=0.01)
    small = model(cell, vocab=20)
    sentence = np.array([4, 1, 9, 9, 0, 13])
    ref = GateByGateLM.like(small)
    assert list(small.predict(sentence)) == [int(np.argmax(s.mulv)) for s in ref.forward_propagation(sentence)]
    assert small.predict(np.stack([sentence, sentence])).shape == (2, 6)
    small.params["V"][:] = 0.0
    small.params["V"][5] = 5.0  # token 5 (unknown) dominates every softmax
    words = small.sample(np.random.default_rng(0), start_id=0, end_id=1, unknown_id=5, max_len=200)
    assert 5 not in words and 0 not in words and len(words) < 200
    fresh = model(cell, vocab=20)  # greedy after reading a prefix: the argmax after start + prefix
    logits = GateByGateLM.like(fresh).forward_propagation([0, 7, 3, 8])[-1].mulv
    logits[0] = -np.inf  # the start token is never sampled
    greedy = fresh.sample(np.random.default_rng(1), 0, None, None, max_len=1, top_k=1, prefix=[7, 3, 8])
    assert greedy == [int(np.argmax(logits))]


def test_the_state_is_every_layers_h_then_c():
    m = model("lstm", layers=2)
    x = np.array([[1, 2, 3]])
    _, state = m.token_nll(x, x)
    H = m.H
    assert np.array_equal(state[0, 2 * H : 3 * H], m.hidden_states(x)[0, -1])  # layer 1's h: the top states
    steps = GateByGateLM.like(m).forward_propagation(x[0])
    np.testing.assert_allclose(state[0, :H], steps[-1].layers[0].h, rtol=1e-12)
    np.testing.assert_allclose(state[0, H : 2 * H], steps[-1].layers[0].c, rtol=1e-12)
    np.testing.assert_allclose(state[0, 3 * H :], steps[-1].layers[1].c, rtol=1e-12)


def test_build_model_keeps_the_rnn_and_builds_the_gated_cells_from_the_config():
    rnn = build_model(ModelConfig(hidden_dim=4, bptt_truncate=2, truncation="window"), 10, 0)
    assert type(rnn) is RNNLM and set(rnn.params) == {"U", "W", "V"}
    expected = build_model(ModelConfig(hidden_dim=4, bptt_truncate=2, truncation="window", dtype="float32"), 10, 0)
    assert all(np.array_equal(rnn.params[n], expected.params[n]) for n in "UWV")
    lstm = build_model(
        ModelConfig(
            cell="lstm",
            hidden_dim=4,
            bptt_truncate=2,
            truncation="chunk",
            layers=2,
            embedding_dim=3,
            forget_bias=2.5,
            dropout=0.5,
        ),
        10,
        0,
    )
    assert isinstance(lstm, GatedLM) and lstm.state_size == 16 and lstm.dropout == 0.5
    assert lstm.params["lstm0_Wx"].shape == (16, 3) and lstm.params["lstm1_Wx"].shape == (16, 4)
    assert np.all(lstm.params["lstm0_b"][4:8] == 2.5) and not lstm.params["lstm0_b"][:4].any()
    gru = build_model(
        ModelConfig(cell="gru", hidden_dim=4, bptt_truncate=2, truncation="full", tie_weights=True), 10, 0
    )
    assert sorted(gru.params) == ["U", "gru0_Wh", "gru0_Wx", "gru0_b", "gru0_bhn"]
    classes = ModelConfig(cell="gru", hidden_dim=4, bptt_truncate=2, truncation="full", output="class", classes=3)
    with pytest.raises(UserError, match="needs the training data's word counts"):
        build_model(classes, 10, 0)
    gru_classes = build_model(classes, 10, 0, counts=np.arange(10, 0, -1))
    assert gru_classes.params["Vc"].shape == (3, 4) and gru_classes.buffers["word_class"].max() == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "tanh"}, "model.cell must be one of rnn, gru, lstm, got 'tanh'."),
        ({"layers": 0}, "model.layers must be >= 1, got 0."),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\), got 1.0."),
        ({"dropout": -0.1}, r"dropout must lie in \[0, 1\)"),
        ({"tie_weights": True, "embedding_dim": 4}, "model.tie_weights needs embedding_dim = hidden_dim, got 4 and 5"),
    ],
)
def test_impossible_models_are_one_clear_error(kwargs, message):
    knobs = {"cell": "lstm", "hidden_dim": 5, "bptt_truncate": 4, "truncation": "window", **kwargs}
    with pytest.raises(UserError, match=message):
        build_model(ModelConfig(**knobs), 10, 0)


def test_bad_input_is_one_clear_error():
    m = model("gru", layers=2)
    with pytest.raises(UserError, match=r"h0 must have shape \(1, 10\) \(the gru's whole state\), got \(1, 5\)"):
        m.backprop([1, 2], [2, 3], h0=np.zeros(5))
    with pytest.raises(UserError, match="outside the vocabulary"):
        m.token_nll([1, 11], [2, 3])
    with pytest.raises(UserError, match="dropout masks must have the shapes"):
        model("gru", dropout=0.5).backprop([1, 2], [2, 3], dropout=model("gru", dropout=0.5).dropout_masks([1], [2]))
    m.params["gru0_Wh"][0, 0] = np.nan
    with pytest.raises(DivergedError, match="lower the learning rate"):
        m.backprop([1, 2, 3], [2, 3, 4])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("truncation", ["window", "full"])
def test_the_products_split_among_threads_give_the_one_thread_gradients(cell, truncation):
    """144 rows: the input projections, weight gradients and input gradients each run in two blocks."""
    x, y = np.random.default_rng(8).integers(0, 30, (2, 16, 9))
    one = model(cell, vocab=30, layers=2, bptt_truncate=3, truncation=truncation, seed=8, threads=1)
    two = model(cell, vocab=30, layers=2, bptt_truncate=3, truncation=truncation, seed=8, threads=2)
    assert len(two._pool.row_blocks(16 * 9)) == 2 and len(one._pool.row_blocks(16 * 9)) == 1
    a, b = one.backprop(x, y), two.backprop(x, y)
    assert b.loss == pytest.approx(a.loss, rel=1e-14)
    for name, g in a.grads.items():
        np.testing.assert_allclose(b.grads[name], g, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(two.token_nll(x, y)[0], one.token_nll(x, y)[0], rtol=1e-13)
    assert b.loss == two.backprop(x, y).loss  # and it repeats bitwise


def test_the_gradcheck_command_checks_every_parameter_of_a_gated_cell():
    ok = subprocess.run(
        [sys.executable, "-m", "rnnexp.check_gradients", "model=lstm", "model.truncation=chunk", "model.layers=2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    names = [line.split()[0] for line in ok.stdout.splitlines()[1:]]
    assert names == ["dU:", *(f"dlstm{l}_{p}:" for l in (0, 1) for p in ("Wx", "Wh", "b")), "dV:"]
    assert all(line.endswith("ok") for line in ok.stdout.splitlines()[1:])
    bad = subprocess.run(
        [sys.executable, "-m", "rnnexp.check_gradients", "model=gru", "model.dropout=0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip() == "error: the gradient check needs model.dropout=0: central differences cannot follow "
        "random masks."
    )
