"""Shared benchmark plumbing: fixed threads, interleaved timing, the machine's description, token data.

Every comparison runs its contenders in one process, in alternating rounds, and reports medians:
the machine is shared, so a slow moment hits every contender alike instead of one of them.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy
from threadpoolctl import threadpool_info, threadpool_limits

from experiments import provenance
from rnnexp.engine.optim import make_optimizer

THREADS = 2
REPEATS = 7  # interleaved rounds: every figure is the median of this many, with its interquartile range
ROOT = Path(__file__).resolve().parent.parent
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def try_import_torch():
    """torch, or None where the optional benchmark dependency is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextmanager
def fixed_threads(n: int = THREADS) -> Iterator[None]:
    """numpy's BLAS and torch (when a benchmark has imported it) both limited to `n` threads."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        if torch:
            torch.set_num_threads(before)


@dataclass
class Timing:
    """Seconds per call of one contender: wall-clock and process CPU samples, and their medians."""

    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def cpu_median(self) -> float:
        """CPU seconds of all the process's threads: barely moved by other processes' load."""
        return float(np.median(self.cpu_samples))

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how noisy the samples were."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float((q3 - q1) / self.median)


def _calls_for(fn: Callable[[], object], min_seconds: float) -> int:
    """How many back-to-back calls make one sample last at least `min_seconds` (after a warm-up call)."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, math.ceil(min_seconds / once))


def interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.05, block: int = 3
) -> dict[str, Timing]:
    """Time each contender in `repeats` rounds, the contenders taking turns inside every round.

    In a round each contender runs `block` samples back to back and, when block > 1, the first is
    discarded: it pays for the switch from the previous contender (caches, BLAS and OpenMP threads
    that were spinning or asleep), which would otherwise be charged to whichever runs second. A
    sample is as many calls as last `min_seconds`, so fast functions are not timed at the clock's
    noise; the first call of each contender is a warm-up and is not timed.
    """
    calls = {name: _calls_for(fn, min_seconds) for name, fn in contenders.items()}
    timings = {name: Timing() for name in contenders}
    names = list(contenders)
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            fn, n = contenders[name], calls[name]
            for sample in range(block):
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(n):
                    fn()
                if sample or block == 1:
                    timings[name].samples.append((time.perf_counter() - start) / n)
                    timings[name].cpu_samples.append((time.process_time() - cpu_start) / n)
    return timings


def training_steps(model, net, batches: list, lr: float) -> dict[str, Callable[[], None]]:
    """One SGD training step per call on each side, cycling through the same batches: the engine's
    (sparse U update) and its PyTorch twin's (`net(x, y)` returns the loss)."""
    torch = try_import_torch()
    torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    sgd = make_optimizer("sgd")
    torch_sgd = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    turn = {"engine": 0, "torch": 0}

    def engine_train() -> None:
        turn["engine"] += 1
        x, y = batches[turn["engine"] % len(batches)]
        sgd.step(model.params, model.backprop(x, y, sparse_u=True).grads, lr)

    def torch_train() -> None:
        turn["torch"] += 1
        x, y = torch_batches[turn["torch"] % len(torch_batches)]
        torch_sgd.zero_grad(set_to_none=True)
        net(x, y).backward()
        torch_sgd.step()

    return {"rnnexp engine": engine_train, "PyTorch": torch_train}


def contest_summary(timings: dict[str, Timing], tokens: int) -> dict:
    """Tokens per second and per CPU second of the engine and PyTorch, their spreads and ratios."""
    rates = {name: tokens / t.median for name, t in timings.items()}
    cpu_rates = {name: tokens / t.cpu_median for name, t in timings.items()}
    return {
        "tokens_per_sec": rates,
        "tokens_per_cpu_sec": cpu_rates,
        "spread": {name: t.spread for name, t in timings.items()},
        "ratio": rates["rnnexp engine"] / rates["PyTorch"],
        "cpu_ratio": cpu_rates["rnnexp engine"] / cpu_rates["PyTorch"],
    }


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory numpy allocates while `fn` runs (tracemalloc sees every numpy buffer)."""
    import tracemalloc

    fn()  # allocate lazily built state (thread pools, optimiser slots) outside the measurement
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def zipf_tokens(rng: np.random.Generator, vocab_size: int, shape) -> np.ndarray:
    """Token ids with frequency ∝ 1/rank, as in real text: sparse updates touch a realistic set of words."""
    p = 1.0 / np.arange(1, vocab_size + 1)
    return rng.choice(vocab_size, size=shape, p=p / p.sum()).astype(np.int64)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_details() -> str:
    """Family, model, clock, the widest SIMD the CPU offers and cpu0's caches: what GEMM speed depends on."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "-"
    flags = set(fields.get("flags", "").split())
    simd = [name for name in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if name in flags]
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        caches.append(f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''} {size}")
    return (
        f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')} stepping "
        f"{fields.get('stepping', '?')}, {fields.get('cpu MHz', '?')} MHz, {' '.join(simd) or 'no AVX2'}; "
        f"caches (cpu0) {', '.join(caches) or '-'}"
    )


def _ram_gib() -> float | None:
    """Physical memory the machine reports (MemTotal), in GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "rnnexp"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.strip() else "")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """What the numbers depend on: CPU, cores, load, library versions, BLAS kernel and thread settings.

    The thread pools listed are those loaded so far: call it after the benchmarks to include torch's.
    """
    with fixed_threads():
        blas = [
            {
                k: lib.get(k)
                for k in ("internal_api", "version", "architecture", "threading_layer", "num_threads", "prefix")
            }
            for lib in threadpool_info()
        ]
    return {
        "cpu": _cpu_model(),
        "cpu_details": _cpu_details(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": _version("torch"),
        "threads": THREADS,
        "thread_pools": blas,
        "environment": {name: os.environ.get(name, "unset") for name in BLAS_ENV},
        "rnnexp_commit": _git_commit(),
        "ram_gib": _ram_gib(),
        # commit, dirty flag and the hash of the code that produced the numbers (the engine and the benchmarks)
        "provenance": provenance.provenance(["benchmarks", "experiments/provenance.py"]).markdown(),
    }


def profile_top(fn: Callable[[], object], calls: int, top: int = 8) -> list[dict]:
    """The functions `fn` spends its own time in (cProfile, this thread), in ms per call of `fn`."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(entry[2] for entry in stats.values())
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(file).name}:{line}({name})" if line else name,
            "ms_per_call": own / calls * 1e3,
            "share": own / total,
        }
        for (file, line, name), (_, _, own, _, _) in rows
    ]
