"""How close training comes to the bound set by numpy's own matrix-multiply speed, and where time goes.

A trained token costs 2·H·V FLOPs in each of the output layer's three products (logits S·Vᵀ, the
gradient into the states dL·V, the gradient of V dLᵀ·S) plus 6·H² in the recurrence (forward
product, backward product, gradient of W): 4.86 MFLOP at H=100, V=8000. The bound is the time
numpy takes for exactly these products at the benchmark's own shapes (N = B·T rows); the
fraction of it that training reaches is bound time / training time. The profile times each
elementwise step of the softmax at the same shapes, on one core, as the engine's workers run it.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import fixed_threads, interleaved, zipf_tokens
from rnnexp.model import RNNLM
from rnnexp.optim import make_optimizer

LEARNING_RATE = 0.1
TARGET_FRACTION = 0.5


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
    """The elementwise work of the engine's softmax cross-entropy on one block of logits."""
    probs, scaled = np.exp(logits), np.empty_like(logits)
    scale = (1.0 / probs.sum(axis=1))[:, None]
    rows = np.arange(len(logits))
    return {
        "exp": lambda: np.exp(logits, out=probs),
        "row sums": lambda: probs.sum(axis=1),
        "scale rows by 1/z": lambda: np.multiply(probs, scale, out=scaled),
        "target logits gather": lambda: logits[rows, y],
    }


def run(smoke: bool = False) -> dict:
    """GFLOP/s of each GEMM, the bound in tokens/s, training's tokens/s and achieved fraction, a profile."""
    vocab, hidden, batch, length, repeats = (300, 16, 4, 6, 2) if smoke else (8000, 100, 32, 35, 5)
    n = batch * length
    dtype = np.float32
    rng = np.random.default_rng(0)
    model = RNNLM(vocab_size=vocab, hidden_dim=hidden, truncation="full", dtype="float32", seed=10)
    stream = zipf_tokens(rng, vocab, (batch, length + 1))
    x, y = stream[:, :-1].copy(), stream[:, 1:].copy()
    S = np.tanh(rng.standard_normal((n, hidden))).astype(dtype)
    G = rng.standard_normal((n, hidden)).astype(dtype)
    L = np.empty((n, vocab), dtype)
    gemms = _gemms(S, model.params["V"].copy(), L, G, model.params["W"].copy(), batch)
    gemm_flops = [2 * n * hidden * vocab] * 3 + [6 * n * hidden * hidden]
    sgd = make_optimizer("sgd")
    min_seconds = 0.0 if smoke else 0.1

    def train_step():
        step = model.backprop(x, y, sparse_u=True)
        sgd.step(model.params, step.grads, LEARNING_RATE)

    with fixed_threads():
        timings = interleaved({"training step": train_step, **gemms}, repeats=repeats, min_seconds=min_seconds)
    with threadpool_limits(limits=1, user_api="blas"):
        block = np.matmul(S[: min(n, 256)], model.params["V"].T)
        block -= block.max(axis=1, keepdims=True)
        steps = _softmax_steps(block, y.reshape(-1)[: len(block)])
        one_core = interleaved(steps, repeats=repeats, min_seconds=min_seconds)

    gemm_seconds = {name: timings[name].median for name in gemms}
    bound_seconds = sum(gemm_seconds.values())
    train_seconds = timings["training step"].median
    per_token = flops_per_token(vocab, hidden)
    # The softmax steps ran on one block of rows with one thread; scale to all N rows on 2 workers.
    blocks = n / len(block)
    softmax_seconds = {name: timings_.median * blocks / 2 for name, timings_ in one_core.items()}
    return {
        "setting": {"vocab_size": vocab, "hidden_dim": hidden, "batch": batch, "seq_len": length, "dtype": "float32",
                    "repeats": repeats},
        "flops_per_token": per_token,
        "gemm_gflops": {name: f / gemm_seconds[name] / 1e9 for name, f in zip(gemms, gemm_flops)},
        "gemm_seconds_per_batch": gemm_seconds,
        "bound_tokens_per_sec": n / bound_seconds,
        "training_tokens_per_sec": n / train_seconds,
        "training_gflops": sum(per_token.values()) * n / train_seconds / 1e9,
        "fraction_of_bound": bound_seconds / train_seconds,
        "profile_seconds_per_batch": {
            "training step (2 threads)": train_seconds,
            "GEMMs at full size (the bound)": bound_seconds,
            **{f"softmax: {name} (2 workers)": s for name, s in softmax_seconds.items()},
        },
        "target_fraction": TARGET_FRACTION,
        "target_met": bound_seconds / train_seconds >= TARGET_FRACTION,
    }
