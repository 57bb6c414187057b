"""The engine's fast paths against the slow obvious computation they replace.

The output layer fuses each block (row sums from the dS product, 1/z folded into a small factor,
the one-hot term subtracted inside the dV product), skips the max shift unless a block overflows,
splits rows among workers and reuses scratch buffers; each of these is checked here against plain
NumPy softmax cross-entropy over the whole batch at once.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.optim import make_optimizer
from rnnexp.engine.outputs import softmax as output
from rnnexp.engine.outputs.softmax import SoftmaxOutput, block_plan, block_rows_for
from rnnexp.engine.threads import WorkerPool


def obvious(S, Vm, y, weights):
    """Softmax cross-entropy the textbook way: every logit shifted, P - onehot, two products."""
    L = S @ Vm.T
    L = L - L.max(axis=1, keepdims=True)
    P = np.exp(L) / np.exp(L).sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    nll = np.log(np.exp(L).sum(axis=1)) - L[rows, y]
    G = P.copy()
    G[rows, y] -= 1.0
    G *= weights[:, None]
    return nll, G @ Vm, G.T @ S


def layer(V, H, threads, scale=1.0, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"V": (rng.uniform(-1, 1, (V, H)) * scale / np.sqrt(H)).astype(dtype)}
    return SoftmaxOutput(params, "V", WorkerPool(threads)), rng


@pytest.mark.parametrize(("rows", "workers"), [(1, 1), (5, 2), (1120, 1), (1120, 2), (1121, 2), (640, 2), (7, 8)])
def test_block_plan_covers_every_row_once_in_equal_blocks_and_equal_shares(rows, workers):
    plan = block_plan(rows, workers, block_rows=320)
    flat = [block for blocks in plan for block in blocks]
    assert [r for a, b in flat for r in range(a, b)] == list(range(rows))
    assert len(plan) == workers and len({len(blocks) for blocks in plan}) <= 2  # empty shares only past the rows
    sizes = [b - a for a, b in flat]
    assert max(sizes) <= 320 and max(sizes) - min(sizes) <= 1


def test_a_block_holds_at_most_its_budget_of_logits_and_at_least_one_row():
    assert block_rows_for(10_000) * 10_000 <= output.OUTPUT_BLOCK_LOGITS < (block_rows_for(10_000) + 1) * 10_000
    assert block_rows_for(10 * output.OUTPUT_BLOCK_LOGITS) == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("scale", [1.0, 400.0, -1.0])  # safe; rows that overflow exp; rows that underflow it
def test_fused_blocks_equal_the_obvious_softmax(threads, scale, monkeypatch):
    monkeypatch.setattr(output, "OUTPUT_BLOCK_LOGITS", 128 * 2000)
    out, rng = layer(2000, 12, threads, scale=abs(scale))
    S = np.tanh(rng.standard_normal((700, 12)) * 3)  # 700 x 2000 logits in blocks of 128 rows: several per worker
    if scale < 0:
        out.params["V"][:] = -np.abs(out.params["V"]) - 150.0  # every logit far below -745: exp underflows
        S = np.abs(S)
    y = rng.integers(0, 2000, 700)
    weights = rng.random(700)
    weights[::7] = 0.0  # padding
    nll, dS, grads = out.nll_grads(S, y, weights, need_grads=True)
    ref_nll, ref_dS, ref_dV = obvious(S, out.params["V"], y, weights)
    np.testing.assert_allclose(nll, ref_nll, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dS, ref_dS, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads["V"], ref_dV, rtol=1e-9, atol=1e-12)
    plain, none_dS, none = out.nll_grads(S, y, None, need_grads=False)
    np.testing.assert_allclose(plain, ref_nll, rtol=1e-10, atol=1e-12)
    assert none_dS is None and none is None


def test_float32_fast_path_stays_close_to_float64():
    out64, rng = layer(3000, 16, 2)
    out32 = SoftmaxOutput({"V": out64.params["V"].astype(np.float32)}, "V", WorkerPool(2))
    S = np.tanh(rng.standard_normal((500, 16)))
    y, w = rng.integers(0, 3000, 500), np.full(500, 1 / 500)
    a, b = out64.nll_grads(S, y, w, True), out32.nll_grads(S.astype(np.float32), y, w.astype(np.float32), True)
    np.testing.assert_allclose(b[0], a[0], rtol=1e-5)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(b[2]["V"], a[2]["V"], rtol=1e-3, atol=1e-7)


def test_scratch_buffers_kept_across_calls_of_other_sizes_give_the_same_numbers():
    out, rng = layer(1500, 8, 2)
    S = np.tanh(rng.standard_normal((900, 8)))
    y, w = rng.integers(0, 1500, 900), rng.random(900)
    first = out.nll_grads(S, y, w, True)
    out.nll_grads(S[:40], y[:40], w[:40], True)  # smaller: the buffers are sliced, not replaced
    out.nll_grads(S[:10].astype(np.float64).repeat(100, axis=0), y[:10].repeat(100), w[:10].repeat(100), True)
    again = out.nll_grads(S, y, w, True)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert np.array_equal(first[2]["V"], again[2]["V"])


def test_worker_pool_returns_results_in_order_with_the_first_in_this_thread():
    import threading

    pool, main = WorkerPool(3), threading.get_ident()
    seen = pool.map(lambda i: (i, threading.get_ident() == main), 3)
    assert seen == [(0, True), (1, False), (2, False)]
    assert pool.map(lambda i: i * 10, 1) == [0]


def test_a_training_step_repeats_bitwise_and_the_optimiser_restores_blas_threads():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 3000, (2, 8, 60))
    runs = []
    for _ in range(2):
        model, sgd = (
            build_model(
                ModelConfig(hidden_dim=16, bptt_truncate=4, truncation="full", dtype="float32"), 3000, 4, threads=2
            ),
            make_optimizer("sgd"),
        )
        with threadpool_limits(2, "blas"):
            for _ in range(3):
                sgd.step(model.params, model.backprop(x, y, sparse_u=True).grads, 0.5)
            after = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
        runs.append(model.params)
        assert after == {2}  # the step ran single-threaded inside and put the setting back
    assert all(np.array_equal(runs[0][n], runs[1][n]) for n in "UWV")


def test_the_engine_limits_every_blas_library_the_process_has_loaded():
    from rnnexp.engine import threads

    loaded = {lib["filepath"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert len(loaded) >= 2  # numpy's and scipy's OpenBLAS
    assert {lib["filepath"] for lib in threads._BLAS.info() if lib["user_api"] == "blas"} == loaded
