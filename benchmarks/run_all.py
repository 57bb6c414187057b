"""`python -m benchmarks.run_all`: every benchmark, then RESULTS.md, results.json and the plots.

The full run takes several minutes on 2 cores; `run_all(out_dir, smoke=True)` runs a tiny version
of each benchmark in seconds, which is what the test suite does so that the benchmarks keep working.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    bench_class_output,
    bench_gated,
    bench_peak,
    bench_scaling,
    bench_sweep,
    bench_torch,
    bench_tracking,
    bench_tutorial_step,
    report,
)
from benchmarks.common import machine_info

BENCHMARKS = {
    "tutorial_step": bench_tutorial_step.run,
    "torch": bench_torch.run,
    "peak": bench_peak.run,
    "scaling": bench_scaling.run,
    "tracking": bench_tracking.run,
    "sweep": bench_sweep.run,
    "class_output": bench_class_output.run,
    "gated": bench_gated.run,
}
HERE = Path(__file__).resolve().parent


def notes(results: dict) -> list[str]:
    """What the numbers say where a target is missed: the profile's largest items."""
    out = []
    tut = results["tutorial_step"]
    if not tut["target_met"]:
        s = tut["setting"]
        gflop = 6 * s["hidden_dim"] * s["vocab_size"] * s["sentence_tokens"] / 1e9
        top = ", ".join(f"{p['function']} {p['ms_per_call']:.1f} ms" for p in tut["profile"][:3])
        out.append(
            f"Tutorial step: {tut['speedup']['gate-based (tutorial)']:.1f}× is short of "
            f"{tut['target_speedup_over_gate_based']:.0f}×. A {s['sentence_tokens']}-token sentence is only "
            f"{gflop:.2f} GFLOP of products; the step is memory traffic over the whole V×H output matrix (the "
            f"logits and dS products read it, dV is zeroed, accumulated and applied by SGD). Largest items: {top}."
        )
        two, one = (tut[key]["rnnexp engine"] for key in ("cpu_seconds_per_step", "one_thread_cpu_seconds_per_step"))
        if two > 1.5 * one:
            out.append(
                f"Tutorial step on 2 threads: the engine's step used {two * 1e3:.0f} CPU ms against {one * 1e3:.0f} ms "
                "on one thread, so its BLAS threads spent the difference waiting for each other on products this "
                "small. Next step: run batches this small with a single-threaded BLAS."
            )
    torch, peak = results["torch"], results["peak"]
    prof = peak["one_thread_profile_cpu_seconds_per_batch"]
    softmax = sum(v for k, v in prof.items() if k.startswith("softmax"))
    breakdown = (
        f"on one thread the engine's step takes {prof['training step'] * 1e3:.0f} CPU ms per batch, of which "
        f"the GEMMs need {prof['GEMMs at full size (the bound)'] * 1e3:.0f} ms at numpy's speed, the softmax's "
        f"elementwise steps {softmax * 1e3:.0f} ms and everything else {prof['everything else'] * 1e3:.0f} ms"
    )
    if "skipped" not in torch and not torch["target_met"]:
        one = torch["one_thread"]["training"]["cpu_ratio"]
        out.append(
            f"PyTorch ratio: {torch['training']['ratio']:.2f}× is short of {torch['target_ratio']}× on 2 threads, "
            f"against {one:.2f}× on one thread by CPU time: {breakdown}. The gap between the two is how much "
            "less than PyTorch the engine gains from the second core."
        )
    if not peak["target_met"]:
        n = peak["setting"]["batch"] * peak["setting"]["seq_len"]
        gemm_gain = prof["GEMMs at full size (the bound)"] / sum(peak["gemm_seconds_per_batch"].values())
        step_gain = peak["training_tokens_per_sec"] / (n / prof["training step"])
        out.append(
            f"Fraction of the bound: {peak['fraction_of_bound']:.3f} on 2 threads is short of "
            f"{peak['target_fraction']}, against {peak['one_thread_fraction_of_bound']:.2f} on one thread: "
            f"{breakdown}. From one thread to two, numpy's GEMMs at these shapes speed up {gemm_gain:.1f}× but "
            f"the training step only {step_gain:.1f}×: the second core is where the shortfall is."
        )
    out += bench_gated.notes(results["gated"])
    load = results["machine"]["load_average_1min_start"], results["machine"]["load_average_1min"]
    out.append(
        f"Load average at start and end: {load[0]} and {load[1]} on {results['machine']['usable_cores']} cores. "
        "Above about 1, other jobs share the cores, and a 2-thread BLAS or OpenMP call then waits for its "
        "second thread whenever another process holds that core: small products (the tutorial step's, the "
        "recurrence's) and PyTorch's OpenMP regions slow down most, by ten times or more, so the 2-thread figures move "
        "from run to run. The one-thread CPU-time column of the targets is the steadier measure of the work."
    )
    return out


def run_all(out_dir: Path = HERE, smoke: bool = False) -> dict:
    """Run every benchmark and write results.json, RESULTS.md and the scaling PNGs into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)
    results: dict = {"smoke": smoke}
    for name, bench in BENCHMARKS.items():
        began = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = bench(smoke=smoke)
        results[name]["wall_seconds"] = time.perf_counter() - began
        print(f"[bench] {name} done in {results[name]['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    results["machine"] = {**machine_info(), "load_average_1min_start": load_at_start}
    results["wall_seconds"] = time.perf_counter() - start
    results["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plots = report.plot_scaling(results["scaling"], out_dir)
    report.write_markdown(results, plots, out_dir / "RESULTS.md", notes(results))
    with_section(out_dir / "RESULTS.md", bench_gated.markdown(results["gated"]))
    return results


def with_section(path: Path, lines: list[str]) -> None:
    """A benchmark's own section of RESULTS.md, put before the notes."""
    text = path.read_text()
    head, notes_heading, tail = text.partition("## Notes")
    path.write_text(head + "\n".join(lines) + "\n" + notes_heading + tail)


if __name__ == "__main__":
    run_all()
