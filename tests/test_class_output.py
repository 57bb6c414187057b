"""The class-based softmax: Mikolov's binning, normalised probabilities, gradients against a literal
per-token reference and central differences in every truncation mode, threads, and bad input."""

import numpy as np
import pytest
from runner_setup import client, compose_run, run_on_trained

from rnnexp.config import resolve
from rnnexp.config.schema import ModelConfig
from rnnexp.data import load_corpus
from rnnexp.engine import build_model
from rnnexp.engine.gated import GatedLM
from rnnexp.engine.outputs import ClassOutput, default_classes, frequency_classes, make_output
from rnnexp.engine.reference.gated import GateByGateLM
from rnnexp.engine.threads import WorkerPool
from rnnexp.errors import UserError
from rnnexp.tracking import train
from rnnexp.training import checkpoint
from rnnexp.training.state import restore_state


def zipf_counts(V: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation((1000.0 / np.arange(1, V + 1)).astype(int) + 1)


def class_model(V=30, H=5, truncation="window", k=3, seed=0, classes=None, threads=None, dtype="float64"):
    return build_model(
        ModelConfig(hidden_dim=H, bptt_truncate=k, truncation=truncation, dtype=dtype, output="class", classes=classes),
        V,
        seed,
        counts=zipf_counts(V, seed),
        threads=threads,
    )


def literal_nll(params: dict, word_class: np.ndarray, s: np.ndarray, y: int) -> float:
    """-log P(c(y)|s) - log P(y|c(y), s), written out word by word."""
    c = word_class[y]
    class_scores = [float(params["Vc"][k] @ s) for k in range(params["Vc"].shape[0])]
    members = [w for w in range(len(word_class)) if word_class[w] == c]
    word_scores = {w: float(params["V"][w] @ s) for w in members}
    log_pc = class_scores[c] - np.log(sum(np.exp(v) for v in class_scores))
    log_pw = word_scores[y] - np.log(sum(np.exp(v) for v in word_scores.values()))
    return -(log_pc + log_pw)


def literal_grads(params, word_class, s, y):
    """dNLL/ds, dNLL/dV, dNLL/dVc for one state, from the definition: (p - onehot) within each softmax."""
    c = word_class[y]
    C, H = params["Vc"].shape
    pc = np.array([np.exp(params["Vc"][k] @ s) for k in range(C)])
    pc /= pc.sum()
    members = [w for w in range(len(word_class)) if word_class[w] == c]
    pw = np.array([np.exp(params["V"][w] @ s) for w in members])
    pw /= pw.sum()
    ds, dV, dVc = np.zeros(H), np.zeros(params["V"].shape), np.zeros((C, H))
    for k in range(C):
        g = pc[k] - (k == c)
        ds += g * params["Vc"][k]
        dVc[k] = g * s
    for p, w in zip(pw, members):
        g = p - (w == y)
        ds += g * params["V"][w]
        dV[w] = g * s
    return ds, dV, dVc


def test_mikolov_binning_gives_equal_mass_classes_in_order_of_frequency():
    counts = np.array([10, 50, 5, 20, 5, 10])  # total 100; by count: 1 (50), 3 (20), 0, 5 (10), 2, 4 (5)
    assert frequency_classes(counts, 3).tolist() == [2, 0, 2, 1, 2, 2]
    assert frequency_classes(counts, 1).tolist() == [0] * 6
    assert frequency_classes(counts, 6).tolist() == [2, 0, 4, 1, 5, 3]  # one word each, by frequency
    big = frequency_classes(zipf_counts(500), 22)
    assert np.unique(big).tolist() == list(range(22))  # no class empty
    assert default_classes(8000) == 89 and default_classes(10000) == 100


def test_probabilities_are_normalised_over_the_whole_vocabulary_and_factorise():
    model = class_model(V=40, H=6, seed=3)
    rng = np.random.default_rng(1)
    states = np.tanh(rng.standard_normal((5, 6)) * 3)
    logp = model.output.logits(states)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-13)
    for s, row in zip(states, logp):
        for w in (0, 7, 39):
            assert -row[w] == pytest.approx(literal_nll(model.params, model.buffers["word_class"], s, w), rel=1e-12)
    assert model.output.logits(states[0]).shape == (40,)


@pytest.mark.parametrize("threads", [1, 2])
def test_output_layer_equals_the_literal_reference_row_by_row(threads):
    model = class_model(V=60, H=7, seed=4, threads=threads)
    out, wc = model.output, model.buffers["word_class"]
    rng = np.random.default_rng(2)
    S = np.tanh(rng.standard_normal((23, 7)) * 2)
    y = rng.integers(0, 60, 23)
    weights = rng.random(23)
    weights[5] = 0.0  # padding
    nll, dS, grads = out.nll_grads(S, y, weights, need_grads=True)
    dV, dVc = np.zeros((60, 7)), np.zeros(model.params["Vc"].shape)
    for r in range(23):
        assert nll[r] == pytest.approx(literal_nll(model.params, wc, S[r], y[r]), rel=1e-12)
        ds, dv, dvc = literal_grads(model.params, wc, S[r], y[r])
        np.testing.assert_allclose(dS[r], weights[r] * ds, rtol=1e-10, atol=1e-14)
        dV += weights[r] * dv
        dVc += weights[r] * dvc
    np.testing.assert_allclose(grads["V"], dV, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads["Vc"], dVc, rtol=1e-10, atol=1e-14)
    plain, _, none = out.nll_grads(S, y, None, need_grads=False)
    assert none is None and np.array_equal(plain, nll)


def truncated_objective(model, params, x, y):
    """Mean NLL as the truncation mode defines it (see rnnexp.engine.gradcheck), with the literal class NLL;
    the gated cells' states come from their gate-by-gate reference."""
    wc, k, T = model.buffers["word_class"], model.bptt_truncate, len(x)
    if isinstance(model, GatedLM):
        gates = {id(p): GateByGateLM.like(model, p) for p in (params, model.params)}
        zero = np.zeros(model.state_size)

        def run(p, h, words):
            return gates[id(p)].run(h, words)

        def nll(h, target):
            top = gates[id(params)].split_state(h)[-1][0]
            return literal_nll({**params, "V": params["U"].T} if model.tie_weights else params, wc, top, target)
    else:
        zero = np.zeros(model.H)

        def run(p, h, words):
            for w in words:
                h = np.tanh(p["U"][:, w] + p["W"] @ h)
            return h

        def nll(h, target):
            return literal_nll(params, wc, h, target)

    if model.truncation == "full":
        return sum(nll(run(params, zero, x[: t + 1]), y[t]) for t in range(T)) / T
    if model.truncation == "chunk":
        total, h_base = 0.0, zero
        for c0 in range(0, T, k):
            for t in range(c0, min(T, c0 + k)):
                total += nll(run(params, h_base, x[c0 : t + 1]), y[t])
            h_base = run(model.params, h_base, x[c0 : c0 + k])
        return total / T
    total = 0.0
    for t in range(T):
        first = max(0, t - k)
        total += nll(run(params, run(model.params, zero, x[:first]), x[first : t + 1]), y[t])
    return total / T


def engine_gradients(model, x, y):
    if model.truncation != "chunk":
        return model.loss_and_grads(x, y)[1]
    total, h = {name: np.zeros_like(p) for name, p in model.params.items()}, None
    for c0 in range(0, len(x), model.bptt_truncate):
        step = model.backprop(x[c0 : c0 + model.bptt_truncate], y[c0 : c0 + model.bptt_truncate], h0=h, reduction="sum")
        for name in total:
            total[name] += step.grads[name] / len(x)
        h = step.h_last
    return total


def cell_model(cell, truncation, tie=False):
    """A tiny model of `cell` with the class output: the tanh RNN, or a gated cell (GRU: 2 layers)."""
    if cell == "rnn":
        return class_model(V=12, H=4, truncation=truncation, k=2, seed=5, classes=3)
    return build_model(
        ModelConfig(
            cell=cell,
            hidden_dim=3,
            bptt_truncate=2,
            truncation=truncation,
            dtype="float64",
            layers=2 if cell == "gru" else 1,
            tie_weights=tie,
            output="class",
            classes=3,
        ),
        12,
        5,
        counts=zipf_counts(12, 5),
    )


@pytest.mark.parametrize("truncation", ["window", "chunk", "full"])
@pytest.mark.parametrize(("cell", "tie"), [("rnn", False), ("gru", False), ("lstm", False), ("lstm", True)])
def test_gradients_equal_central_differences_in_every_truncation_mode_and_cell(cell, tie, truncation):
    model = cell_model(cell, truncation, tie)
    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 12, (2, 7))
    analytic = engine_gradients(model, x, y)
    assert {"U", "Vc"} <= set(analytic) and ("V" in analytic) != tie
    eps, errors = 1e-4, {}  # the five-point stencil: error O(eps⁴), so tiny gradients resolve too
    for name, p in model.params.items():
        numeric = np.zeros(p.shape)
        trial = {n: q.copy() for n, q in model.params.items()}
        for idx in np.ndindex(p.shape):
            old, f = trial[name][idx], []
            for step in (2, 1, -1, -2):
                trial[name][idx] = old + step * eps
                f.append(truncated_objective(model, trial, x, y))
            trial[name][idx] = old
            numeric[idx] = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * eps)
        errors[name] = np.abs(analytic[name] - numeric).max() / max(np.abs(numeric).max(), 1e-12)
    assert max(errors.values()) < 1e-7, errors


def test_threads_give_bitwise_the_same_result_and_it_repeats():
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 3000, (2, 8, 50))  # 400 rows x 3000 words: enough for the workers
    one = class_model(V=3000, H=8, truncation="full", seed=1, threads=1, dtype="float32")
    two = class_model(V=3000, H=8, truncation="full", seed=1, threads=2, dtype="float32")
    a, b, again = one.backprop(x, y), two.backprop(x, y), two.backprop(x, y)
    assert a.loss == b.loss == again.loss
    for name in ("U", "W", "V", "Vc"):
        assert np.array_equal(a.grads[name], b.grads[name]) and np.array_equal(b.grads[name], again.grads[name])


def test_scores_sampling_and_prediction_read_the_same_distribution():
    model = class_model(V=25, H=5, seed=8)
    x, y = np.array([[1, 4, 9, 2, 7]]), np.array([[4, 9, 2, 7, 3]])
    nll, _ = model.token_nll(x, y)
    logp = model.output.logits(model.hidden_states(x)[0])
    np.testing.assert_allclose(nll[0], -logp[np.arange(5), y[0]], rtol=1e-12)
    assert np.array_equal(model.predict(x[0]), logp.argmax(axis=1))
    untrained = class_model(V=400, H=20, seed=9, dtype="float32")
    x, y = np.random.default_rng(0).integers(0, 400, (2, 3, 30))
    sizes = np.bincount(untrained.buffers["word_class"])  # near-uniform guessing: P(w) = 1/C · 1/|c(w)|
    expected = np.log(len(sizes) * sizes[untrained.buffers["word_class"][y]]).mean()
    assert untrained.loss(x, y) == pytest.approx(expected, rel=0.01)
    words = model.sample(np.random.default_rng(0), start_id=0, end_id=1, unknown_id=2, max_len=30)
    assert 2 not in words and 1 not in words and len(words) <= 30


def test_a_checkpoints_word_classes_rebuild_the_same_model():
    model = class_model(V=50, H=6, seed=10)
    rebuilt = build_model(
        ModelConfig(hidden_dim=6, bptt_truncate=3, truncation="window", dtype="float64", output="class"),
        50,
        10,
        word_class=model.buffers["word_class"],
    )
    assert np.array_equal(rebuilt.buffers["word_class"], model.buffers["word_class"])
    assert all(np.array_equal(rebuilt.params[n], model.params[n]) for n in model.params)
    softmax = build_model(ModelConfig(hidden_dim=6, bptt_truncate=3, truncation="window", dtype="float64"), 50, 10)
    assert all(np.array_equal(softmax.params[n], model.params[n]) for n in "UWV")  # the same draws, Vc after
    assert softmax.buffers == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"counts": None}, "needs the training data's word counts"),
        ({"classes": 31}, "between 1 and the vocabulary size 30"),
        ({"counts": np.zeros(30)}, "all zero"),
        ({"counts": np.ones(29)}, "cover 29 words"),
        ({"counts": None, "word_class": np.array([0, 2] * 15)}, "no class empty"),
    ],
)
def test_impossible_class_settings_are_one_clear_error(kwargs, message):
    args = {"counts": zipf_counts(30), **kwargs}
    cfg = ModelConfig(
        hidden_dim=4, bptt_truncate=4, truncation="window", output="class", classes=args.pop("classes", None)
    )
    with pytest.raises(UserError, match=message):
        build_model(cfg, 30, None, **args)


def test_make_output_refuses_an_unknown_kind():
    with pytest.raises(UserError, match="softmax or class"):
        make_output("hierarchical", {"V": np.zeros((4, 2))}, "V", WorkerPool(1), np.random.default_rng(0))
    assert isinstance(class_model().output, ClassOutput)


def test_a_class_output_run_trains_checkpoints_resumes_generates_and_evaluates(tmp_path):
    cfg = compose_run(tmp_path, "model.output=class", "model.classes=6", "experiment_name=classes")
    train(cfg)
    mlflow = client(tmp_path)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("classes").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.output"] == "class"
    assert run.data.metrics["test_ppl"] < 40  # better than guessing among the 40 words
    saved = checkpoint.load(tmp_path / "checkpoints" / run.info.run_id / "last.npz")
    assert set(saved.params) == {"U", "W", "V", "Vc"} and saved.params["Vc"].shape[0] == 6
    run_cfg = resolve(saved.meta["config"])
    corpus = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
    counts = np.bincount(corpus.splits["train"].stream(), minlength=len(corpus.vocab))
    assert np.array_equal(saved.arrays["word_class"], frequency_classes(counts, 6))
    state = restore_state(run_cfg, corpus, saved, tmp_path / "checkpoints" / run.info.run_id)
    assert np.array_equal(state.model.buffers["word_class"], saved.arrays["word_class"])
    assert all(np.array_equal(state.model.params[n], saved.params[n]) for n in saved.params)
    generated = run_on_trained(tmp_path, "rnnexp.generate", run.info.run_id, "num=3")
    assert len(generated.stdout.strip().splitlines()) == 3
    scored = run_on_trained(tmp_path, "rnnexp.evaluate", run.info.run_id, "split=test")
    assert f"{run.data.metrics['test_ppl']:.2f}" in scored.stdout


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_score_sample_and_predict_through_the_class_output(cell):
    model = cell_model(cell, "window")
    x, y = np.array([[1, 4, 9, 2, 7]]), np.array([[4, 9, 2, 7, 3]])
    logp = model.output.logits(model.hidden_states(x)[0])
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)
    nll, _ = model.token_nll(x, y)
    np.testing.assert_allclose(nll[0], -logp[np.arange(5), y[0]], rtol=1e-12)
    assert np.array_equal(model.predict(x[0]), logp.argmax(axis=1))
    words = model.sample(np.random.default_rng(0), start_id=0, end_id=1, unknown_id=2, max_len=20)
    assert 2 not in words and len(words) <= 20
    assert set(model.buffers) == {"word_class"}
