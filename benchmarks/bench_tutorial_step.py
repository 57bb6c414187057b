"""One SGD step at the tutorial's setting: the gate-based code, WildML's NumPy code and the engine.

The tutorial trains on one sentence at a time with the gradient of the sentence's summed loss
(V=8000, H=100, bptt_truncate=4, float64). The engine's step is `backprop(reduction="sum",
sparse_u=True)` plus the SGD optimiser, which updates only the columns of U the sentence used.
All three start from the same weights, and their gradients are checked equal before timing.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import REPEATS, fixed_threads, interleaved, profile_top, zipf_tokens
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.optim import make_optimizer
from rnnexp.engine.reference.tutorial import GateRNN, WildMLRNN
from rnnexp.engine.rnn import RNNLM

LEARNING_RATE = 0.005  # the tutorial's
TARGET_SPEEDUP = 50.0


def _twin(cls, model: RNNLM):
    """A tutorial model holding copies of `model`'s weights."""
    ref = cls(model.vocab_size, model.H, model.bptt_truncate)
    ref.U, ref.W, ref.V = (np.array(model.params[n], dtype=np.float64, order="C") for n in "UWV")
    return ref


def _max_rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def run(smoke: bool = False) -> dict:
    """Seconds per SGD step of each implementation, and the engine's speed-up over the other two."""
    vocab, hidden, length, repeats = (300, 16, 20, 2) if smoke else (8000, 100, 20, REPEATS)
    rng = np.random.default_rng(0)
    sentence = zipf_tokens(rng, vocab, length + 1)
    x, y = sentence[:-1], sentence[1:]
    model = build_model(
        ModelConfig(hidden_dim=hidden, bptt_truncate=4, truncation="window", dtype="float64"), vocab, 10
    )
    gate, wildml = _twin(GateRNN, model), _twin(WildMLRNN, model)
    sgd = make_optimizer("sgd")

    with fixed_threads():
        step = model.backprop(x, y, reduction="sum", sparse_u=True)
        engine_grads = (step.grads["U"].toarray(vocab), step.grads["W"], step.grads["V"])
        gate_grads = gate.bptt(x, y)
        wild_u, wild_v, wild_w = wildml.bptt(x, y)
        errors = [_max_rel_err(e, r) for e, r in zip(engine_grads, gate_grads)]
        errors += [_max_rel_err(e, r) for e, r in zip(engine_grads, (wild_u, wild_w, wild_v))]
        if max(errors) > 1e-9:
            raise AssertionError(f"the engine's gradients differ from the tutorial's by {max(errors):.2e}")

        def engine_step():
            s = model.backprop(x, y, reduction="sum", sparse_u=True)
            sgd.step(model.params, s.grads, LEARNING_RATE)

        contenders = {
            "gate-based (tutorial)": lambda: gate.sgd_step(x, y, LEARNING_RATE),
            "WildML NumPy": lambda: wildml.sgd_step(x, y, LEARNING_RATE),
            "rnnexp engine": engine_step,
        }
        options = {"min_seconds": 0.0 if smoke else 0.05, "block": 2}
        timings = interleaved(contenders, repeats=repeats, **options)
        profile = profile_top(engine_step, calls=5 if smoke else 50)
    with fixed_threads(1):  # one thread: CPU time measures each side's work whatever the machine's load
        one_thread = interleaved(contenders, repeats=repeats, **options)
    engine = timings["rnnexp engine"].median
    return {
        "setting": {
            "vocab_size": vocab,
            "hidden_dim": hidden,
            "bptt_truncate": 4,
            "sentence_tokens": length,
            "dtype": "float64",
            "repeats": repeats,
        },
        "gradient_max_rel_err": max(errors),
        "seconds_per_step": {name: t.median for name, t in timings.items()},
        "cpu_seconds_per_step": {name: t.cpu_median for name, t in timings.items()},
        "spread": {name: t.spread for name, t in timings.items()},
        "speedup": {name: t.median / engine for name, t in timings.items() if name != "rnnexp engine"},
        "one_thread_cpu_seconds_per_step": {name: t.cpu_median for name, t in one_thread.items()},
        "one_thread_cpu_speedup": {
            name: t.cpu_median / one_thread["rnnexp engine"].cpu_median
            for name, t in one_thread.items()
            if name != "rnnexp engine"
        },
        "profile": profile,
        "target_speedup_over_gate_based": TARGET_SPEEDUP,
        "target_met": timings["gate-based (tutorial)"].median / engine >= TARGET_SPEEDUP,
    }
