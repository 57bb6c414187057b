"""How training cost grows: tokens/s and peak memory against vocabulary (full and class-based
softmax), hidden size, batch, truncation length (window and chunk modes) and sequence length, one knob at a time.

Every other setting stays at the PyTorch comparison's (V=8000, H=100, B=32, T=35, float32, full
BPTT, SGD with the sparse U update). Each distinct point is timed once (the base point belongs to
four curves, and is one measurement in all of them), every point taking its turn in each of the
rounds, so a busy moment on the shared machine bends no curve; on 2 threads by wall-clock time and
again on one thread by CPU time, which other jobs on the machine move far less. Peak memory is
what numpy allocates during one step (tracemalloc), on top of the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from benchmarks.common import REPEATS, THREADS, fixed_threads, interleaved, peak_bytes, zipf_tokens
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.optim import make_optimizer

LEARNING_RATE = 0.1


@dataclass(frozen=True)
class Point:
    vocab_size: int = 8000
    hidden_dim: int = 100
    batch: int = 32
    seq_len: int = 35
    truncation: str = "full"
    bptt_truncate: int = 4
    output: str = "softmax"

    @property
    def tokens_per_call(self) -> int:
        """A chunk-mode call trains one chunk of `bptt_truncate` steps; the others a whole batch."""
        return self.batch * (self.bptt_truncate if self.truncation == "chunk" else self.seq_len)


SWEEPS = {
    "vocab_size": {
        output: [replace(Point(), vocab_size=v, output=output) for v in (1000, 2000, 4000, 8000, 16000, 32000, 100000)]
        for output in ("softmax", "class")
    },
    "hidden_dim": {"full": [replace(Point(), hidden_dim=h) for h in (50, 100, 200, 400)]},
    "batch": {"full": [replace(Point(), batch=b) for b in (1, 4, 16, 32, 64, 128)]},
    "bptt_truncate": {
        mode: [replace(Point(), truncation=mode, bptt_truncate=k) for k in (1, 2, 4, 8, 16, 32)]
        for mode in ("window", "chunk")
    },
    "seq_len": {
        label: [replace(Point(), seq_len=t, **kw) for t in (5, 10, 20, 35, 70, 140)]
        for label, kw in (("full", {}), ("window k=4", {"truncation": "window"}))
    },
}
SMOKE_SWEEPS = {
    name: {
        label: [
            replace(
                p,
                vocab_size=p.vocab_size // 50,
                hidden_dim=p.hidden_dim // 10,
                batch=max(1, p.batch // 16),
                seq_len=p.seq_len // 5 + 1,
            )
            for p in points[:2]
        ]
        for label, points in series.items()
    }
    for name, series in SWEEPS.items()
}


def zipf_counts(vocab_size: int) -> np.ndarray:
    """Word counts ∝ 1/rank, as `zipf_tokens` draws them: what the class output bins its classes by."""
    return np.round(1e7 / np.arange(1, vocab_size + 1)).astype(np.int64) + 1


def training_step(point: Point, seed: int = 0):
    """A callable that trains one batch (one chunk, in chunk mode) of `point`'s shape per call."""
    rng = np.random.default_rng(seed)
    model = build_model(
        ModelConfig(
            hidden_dim=point.hidden_dim,
            bptt_truncate=point.bptt_truncate,
            truncation=point.truncation,
            dtype="float32",
            output=point.output,
        ),
        point.vocab_size,
        seed,
        counts=zipf_counts(point.vocab_size) if point.output == "class" else None,
    )
    sgd = make_optimizer("sgd")
    length = point.bptt_truncate if point.truncation == "chunk" else point.seq_len
    stream = zipf_tokens(rng, point.vocab_size, (point.batch, length + 1))
    x, y = stream[:, :-1].copy(), stream[:, 1:].copy()
    carried = {"h": None}

    def step():
        s = model.backprop(x, y, h0=carried["h"], sparse_u=True)
        sgd.step(model.params, s.grads, LEARNING_RATE)
        if point.truncation == "chunk":
            carried["h"] = s.h_last

    return step


def _timed(points: list[Point], threads: int, options: dict) -> tuple[dict, dict]:
    """Timings of the points, taking turns, and the step callables (built under `threads`), keyed by index."""
    with fixed_threads(threads):
        steps = {str(i): training_step(p) for i, p in enumerate(points)}
        return interleaved(steps, block=2, **options), steps


def run(smoke: bool = False) -> dict:
    """For each sweep and series: the knob's values, tokens/s on 2 threads, tokens per CPU second on
    one thread (the work, whatever the machine's load) and peak MiB at each."""
    sweeps = SMOKE_SWEEPS if smoke else SWEEPS
    options = {"repeats": 1, "min_seconds": 0.0} if smoke else {"repeats": REPEATS, "min_seconds": 0.2}
    points = list(dict.fromkeys(p for series in sweeps.values() for curve in series.values() for p in curve))
    key = {p: str(i) for i, p in enumerate(points)}
    two, steps = _timed(points, THREADS, options)
    one, _ = _timed(points, 1, options)
    with fixed_threads():
        peaks = {p: peak_bytes(steps[key[p]]) / 2**20 for p in points}
    results: dict = {}
    for knob, series in sweeps.items():
        results[knob] = {
            label: {
                "x": [getattr(p, knob) for p in curve],
                "tokens_per_sec": [p.tokens_per_call / two[key[p]].median for p in curve],
                "spread": [two[key[p]].spread for p in curve],
                "one_thread_tokens_per_cpu_sec": [p.tokens_per_call / one[key[p]].cpu_median for p in curve],
                "peak_mib": [peaks[p] for p in curve],
                "base": [p == Point() for p in curve],
            }
            for label, curve in series.items()
        }
    return {"base": Point().__dict__, "sweeps": results, "points": len(points), "repeats": options["repeats"]}
