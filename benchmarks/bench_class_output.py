"""The class-based softmax against the full one: training tokens/s at large vocabularies.

At each vocabulary size both outputs train the same batches (B=32, T=35, H=100, float32, full
BPTT, SGD), taking turns in one process; the class output bins Zipf-distributed word counts into
round(√V) classes. On 2 threads by wall-clock time (the target), and the CPU time beside it.
"""

from __future__ import annotations

from benchmarks.bench_scaling import Point, training_step
from benchmarks.common import REPEATS, THREADS, fixed_threads, interleaved

TARGET_VOCAB = 32000
TARGET_SPEEDUP = 5.0


def run(smoke: bool = False) -> dict:
    """Tokens/s of each output at each V, and the class output's speed-up."""
    vocabs, repeats = ((300, 1200), 1) if smoke else ((8000, TARGET_VOCAB, 100000), REPEATS)
    base = Point(hidden_dim=10, batch=2, seq_len=8) if smoke else Point()
    results = {}
    for vocab in vocabs:
        points = {
            output: Point(**{**base.__dict__, "vocab_size": vocab, "output": output}) for output in ("softmax", "class")
        }
        with fixed_threads(THREADS):
            steps = {output: training_step(p) for output, p in points.items()}
            timings = interleaved(steps, repeats=repeats, min_seconds=0.0 if smoke else 0.2, block=2)
        tokens = base.tokens_per_call
        results[vocab] = {
            "tokens_per_sec": {name: tokens / t.median for name, t in timings.items()},
            "tokens_per_cpu_sec": {name: tokens / t.cpu_median for name, t in timings.items()},
            "spread": {name: t.spread for name, t in timings.items()},
            "speedup": timings["softmax"].median / timings["class"].median,
        }
    target = results.get(TARGET_VOCAB)
    return {
        "setting": {
            **{k: v for k, v in base.__dict__.items() if k not in ("vocab_size", "output")},
            "vocab_sizes": list(vocabs),
            "classes": "round(sqrt(V))",
            "repeats": repeats,
        },
        "by_vocab": {str(v): r for v, r in results.items()},
        "target_vocab": TARGET_VOCAB,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": target is not None and target["speedup"] >= TARGET_SPEEDUP,
    }
