"""How close training comes to the bound set by numpy's own matrix-multiply speed, and where time goes.

A trained token costs 2·H·V FLOPs in each of the output layer's three products (logits S·Vᵀ, the
gradient into the states dL·V, the gradient of V dLᵀ·S) plus 6·H² in the recurrence (forward
product, backward product, gradient of W): 4.86 MFLOP at H=100, V=8000. The bound is the time
numpy takes for exactly these products at the benchmark's own shapes (N = B·T rows); the
fraction of it that training reaches is bound time / training time. The profile, on one thread
and in CPU time, splits a step into the GEMMs, each elementwise step of the softmax (timed on one
block of rows and scaled to all), and everything else.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import REPEATS, THREADS, fixed_threads, interleaved, zipf_tokens
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.optim import make_optimizer
from rnnexp.engine.outputs.softmax import block_rows_for

LEARNING_RATE = 0.1
TARGET_FRACTION = 0.7
TARGET_THREAD_SPEEDUP = 1.6  # the engine's own step, one thread against two


def flops_per_token(vocab: int, hidden: int) -> dict[str, int]:
    return {"output layer (3 GEMMs)": 6 * hidden * vocab, "recurrence": 6 * hidden * hidden}


def _gemms(S, Vm, L, G, W, batch: int) -> dict:
    """The products one training step does, at full size, each a callable."""
    length = S.shape[0] // batch
    states = S.reshape(length, batch, -1)

    def recurrence():
        for t in range(length):  # forward and backward: one (B×H)·(H×H) product per step each
            states[t] @ W
            states[t] @ W.T
        G.T @ S  # gradient of W

    return {
        "logits S·Vᵀ (N×H)·(H×V)": lambda: np.matmul(S, Vm.T, out=L),
        "dS = dL·V (N×V)·(V×H)": lambda: L @ Vm,
        "dV = dLᵀ·S (V×N)·(N×H)": lambda: L.T @ S,
        "recurrence (T×(B×H)·(H×H) ×2, dW)": recurrence,
    }


def _softmax_steps(logits: np.ndarray, y: np.ndarray) -> dict:
    """The elementwise work of the engine's softmax cross-entropy on one block of logits: the row sums
    come out of the dS product and 1/z is folded into a small factor, so exp is the one full pass."""
    probs = np.exp(logits)
    z = probs.sum(axis=1)
    rows = np.arange(len(logits))

    def one_hot_term():
        probs[rows, y] -= z

    return {
        "exp": lambda: np.exp(logits, out=probs),
        "target logits gather": lambda: logits[rows, y],
        "one-hot term E[r, y_r] -= z_r": one_hot_term,
    }


def _timings(threads: int, vocab: int, hidden: int, batch: int, length: int, options: dict) -> dict:
    """A training step, each GEMM at full size and (on one thread) the softmax's steps, taking turns."""
    n = batch * length
    rng = np.random.default_rng(0)
    stream = zipf_tokens(rng, vocab, (batch, length + 1))
    x, y = stream[:, :-1].copy(), stream[:, 1:].copy()
    S = np.tanh(rng.standard_normal((n, hidden))).astype(np.float32)
    G = rng.standard_normal((n, hidden)).astype(np.float32)
    with fixed_threads(threads):
        model = build_model(
            ModelConfig(hidden_dim=hidden, bptt_truncate=4, truncation="full", dtype="float32"), vocab, 10
        )
        sgd = make_optimizer("sgd")
        Vm, L = model.params["V"].copy(), np.empty((n, vocab), np.float32)
        contenders = {
            "training step": lambda: sgd.step(model.params, model.backprop(x, y, sparse_u=True).grads, LEARNING_RATE),
            **_gemms(S, Vm, L, G, model.params["W"].copy(), batch),
        }
        if threads == 1:
            rows = block_rows_for(vocab)  # rows of logits the engine's softmax works on at once
            block = S[:rows] @ Vm.T
            contenders.update(
                {
                    f"softmax: {name}": step
                    for name, step in _softmax_steps(
                        block - block.max(axis=1, keepdims=True), y.reshape(-1)[:rows]
                    ).items()
                }
            )
        timings = interleaved(contenders, **options)
    if threads > 1:
        return {name: t.median for name, t in timings.items()}
    blocks = n / min(n, block_rows_for(vocab))  # the softmax steps ran on one block: scale to all rows
    return {name: t.cpu_median * (blocks if name.startswith("softmax") else 1) for name, t in timings.items()}


def _thread_scaling(vocab: int, hidden: int, batch: int, length: int, options: dict) -> dict:
    """The engine's training step with one thread and with two (BLAS and output workers alike), taking turns."""
    stream = zipf_tokens(np.random.default_rng(1), vocab, (batch, length + 1))
    x, y = stream[:, :-1].copy(), stream[:, 1:].copy()

    def step(threads: int):
        with fixed_threads(threads):
            model = build_model(
                ModelConfig(hidden_dim=hidden, bptt_truncate=4, truncation="full", dtype="float32"),
                vocab,
                10,
                threads=threads,
            )
        sgd = make_optimizer("sgd")

        def call():
            with fixed_threads(threads):
                sgd.step(model.params, model.backprop(x, y, sparse_u=True).grads, LEARNING_RATE)

        return call

    timings = interleaved({str(n): step(n) for n in (1, THREADS)}, **options)
    return {
        "tokens_per_sec": {n: batch * length / t.median for n, t in timings.items()},
        "spread": {n: t.spread for n, t in timings.items()},
        "speedup": timings["1"].median / timings[str(THREADS)].median,
    }


def run(smoke: bool = False) -> dict:
    """GFLOP/s of each GEMM, the bound in tokens/s, training's tokens/s and achieved fraction, a profile.

    On 2 threads (the target) by wall-clock time; on one thread by CPU time, which other work on
    the machine barely moves and which gives the profile.
    """
    vocab, hidden, batch, length, repeats = (300, 16, 4, 6, 2) if smoke else (8000, 100, 32, 35, REPEATS)
    n = batch * length
    options = {"repeats": repeats, "min_seconds": 0.0 if smoke else 0.1}
    two = _timings(THREADS, vocab, hidden, batch, length, options)
    one = _timings(1, vocab, hidden, batch, length, options)
    gemm_names = [name for name in two if name != "training step"]
    gemm_flops = [2 * n * hidden * vocab] * 3 + [6 * n * hidden * hidden]
    bound, bound_one = sum(two[g] for g in gemm_names), sum(one[g] for g in gemm_names)
    softmax = {name: sec for name, sec in one.items() if name.startswith("softmax")}
    per_token = flops_per_token(vocab, hidden)
    scaling = _thread_scaling(vocab, hidden, batch, length, options)
    return {
        "setting": {
            "vocab_size": vocab,
            "hidden_dim": hidden,
            "batch": batch,
            "seq_len": length,
            "dtype": "float32",
            "repeats": repeats,
        },
        "flops_per_token": per_token,
        "gemm_gflops": {name: f / two[name] / 1e9 for name, f in zip(gemm_names, gemm_flops)},
        "gemm_seconds_per_batch": {name: two[name] for name in gemm_names},
        "bound_tokens_per_sec": n / bound,
        # the step's own 2-thread rate, from the thread-scaling contest: timed beside numpy's 2-thread
        # GEMMs, it would share the cores with OpenBLAS's threads, which spin on after each product
        "training_tokens_per_sec": scaling["tokens_per_sec"][str(THREADS)],
        "training_beside_gemms_tokens_per_sec": n / two["training step"],
        "training_gflops": sum(per_token.values()) * scaling["tokens_per_sec"][str(THREADS)] / 1e9,
        "fraction_of_bound": scaling["tokens_per_sec"][str(THREADS)] / (n / bound),
        "one_thread_fraction_of_bound": bound_one / one["training step"],
        "one_thread_profile_cpu_seconds_per_batch": {
            "training step": one["training step"],
            "GEMMs at full size (the bound)": bound_one,
            **softmax,
            "everything else": one["training step"] - bound_one - sum(softmax.values()),
        },
        "target_fraction": TARGET_FRACTION,
        "target_met": scaling["tokens_per_sec"][str(THREADS)] / (n / bound) >= TARGET_FRACTION,
        "thread_scaling": scaling,
        "target_thread_speedup": TARGET_THREAD_SPEEDUP,
        "target_thread_met": scaling["speedup"] >= TARGET_THREAD_SPEEDUP,
    }
