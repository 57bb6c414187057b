"""Timing the tutorial's SGD step and the engine's side by side, in one process, fairly.

The machine is shared, so contenders take turns inside every round (in a rotating order) and the
figures are medians over rounds: a burst of load elsewhere slows one sample of each, not one
contender. Each contender is warmed up first (allocator and BLAS start-up are not the step).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_info

from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.optim import make_optimizer
from rnnexp.engine.reference.tutorial import GateRNN, WildMLRNN

Step = Callable[[np.ndarray, np.ndarray], None]
GATE = "gate-based NumPy (GateRNN.sgd_step)"
WILDML = "WildML NumPy (RNNNumpy.sgd_step)"
ENGINE64 = "engine, float64 (RNNLM.backprop + SGD)"
ENGINE32 = "engine, float32 (RNNLM.backprop + SGD)"


def tutorial_steps(vocab_size: int, hidden_dim: int, bptt_truncate: int, lr: float, seed: int) -> dict[str, Step]:
    """One SGD step on one sentence with the tutorial's own code: its `sgd_step`."""
    gate = GateRNN(vocab_size, hidden_dim, bptt_truncate, seed=seed)
    wildml = WildMLRNN(vocab_size, hidden_dim, bptt_truncate, seed=seed)
    return {GATE: lambda x, y: gate.sgd_step(x, y, lr), WILDML: lambda x, y: wildml.sgd_step(x, y, lr)}


def engine_steps(vocab_size: int, hidden_dim: int, bptt_truncate: int, lr: float, seed: int) -> dict[str, Step]:
    """One SGD step on one sentence with the engine, as the runner trains the tutorial: backprop of the
    sentence's summed loss with the sparse U gradient, then the SGD update; in both precisions."""
    sgd = make_optimizer("sgd")

    def engine(dtype: str) -> Step:
        model = build_model(
            ModelConfig(hidden_dim=hidden_dim, bptt_truncate=bptt_truncate, truncation="window", dtype=dtype),
            vocab_size,
            seed,
        )

        def step(x: np.ndarray, y: np.ndarray) -> None:
            result = model.backprop(x, y, reduction="sum", sparse_u=True)
            sgd.step(model.params, result.grads, lr)

        return step

    return {ENGINE64: engine("float64"), ENGINE32: engine("float32")}


def seconds_per_call(task: Callable[[], None], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        task()
    return (time.perf_counter() - started) / calls


def interleaved(
    tasks: dict[str, Callable[[], None]], rounds: int, round_seconds: float, warm_up: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each task, one sample per round; tasks alternate within each round.

    The warm-up call also sizes each task's calls per round to fill `round_seconds`; without it,
    each round makes one call of each task.
    """
    calls = {name: 1 for name in tasks}
    if warm_up:
        calls = {name: max(1, math.ceil(round_seconds / seconds_per_call(task, 1))) for name, task in tasks.items()}
    samples: dict[str, list[float]] = {name: [] for name in tasks}
    names = list(tasks)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(seconds_per_call(tasks[name], calls[name]))
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def blas_description() -> str:
    libraries = [
        f"{lib['internal_api']} {lib['version']}, {lib['num_threads']} threads"
        for lib in threadpool_info()
        if lib["user_api"] == "blas"
    ]
    return "; ".join(libraries) or "unknown BLAS"
