"""Turn the benchmarks' results into RESULTS.md and the scaling plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from benchmarks.common import THREADS  # noqa: E402

KNOB_LABELS = {
    "vocab_size": "vocabulary size V",
    "hidden_dim": "hidden size H",
    "batch": "batch size B",
    "bptt_truncate": "truncation length k",
    "seq_len": "sequence length T",
}


def plot_scaling(scaling: dict, out_dir: Path) -> dict[str, str]:
    """One PNG per knob: tokens/s and peak memory against it, one line per series."""
    files = {}
    for knob, series in scaling["sweeps"].items():
        fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
        for color, (label, data) in zip(("tab:blue", "tab:orange"), series.items()):
            speed.plot(data["x"], data["tokens_per_sec"], marker="o", color=color, label=f"{label}, 2 threads")
            speed.plot(
                data["x"],
                data["one_thread_tokens_per_cpu_sec"],
                marker="s",
                linestyle="--",
                color=color,
                label=f"{label}, 1 thread per CPU s",
            )
            memory.plot(data["x"], data["peak_mib"], marker="o", color=color, label=label)
        for ax, ylabel in ((speed, "training tokens / s"), (memory, "peak memory per step (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(next(iter(series.values()))["x"])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_yscale("log")
            ax.set_xlabel(KNOB_LABELS[knob])
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(title="output" if knob == "vocab_size" else "BPTT", fontsize="small")
        fig.suptitle(f"Training cost against {KNOB_LABELS[knob]} (others at V=8000, H=100, B=32, T=35, float32)")
        fig.tight_layout()
        name = f"scaling_{knob}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        files[knob] = name
    return files


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _yes(flag: bool) -> str:
    return "**yes**" if flag else "**no**"


def _machine(m: dict) -> list[str]:
    pools = "; ".join(
        f"{p['internal_api']} {p['version']} ({p['architecture'] or '-'}, {p['threading_layer'] or '-'}, "
        f"{p['num_threads']} threads, {p['prefix']})"
        for p in m["thread_pools"]
    )
    env = ", ".join(f"{k}={v}" for k, v in m["environment"].items())
    rows = [
        ["CPU", m["cpu"]],
        ["CPU details", m["cpu_details"]],
        ["cores (logical / usable)", f"{m['logical_cores']} / {m['usable_cores']}"],
        ["memory", f"{m['ram_gib']} GiB" if m.get("ram_gib") else "not recorded"],
        ["load average (1 min) at start / end", f"{m['load_average_1min_start']} / {m['load_average_1min']}"],
        [
            "Python / numpy / scipy / torch",
            f"{m['python']} / {m['numpy']} / {m['scipy']} / {m['torch'] or 'not installed'}",
        ],
        ["thread pools (threadpoolctl)", pools],
        ["threads used", f"{m['threads']} for numpy's BLAS and for torch, on both sides of every comparison"],
        ["environment", env],
        ["rnnexp commit", m.get("provenance") or m["rnnexp_commit"] or "-"],
    ]
    return ["## Machine", ""] + _table(["", ""], rows)


def _targets(r: dict) -> list[str]:
    rows = []
    tut = r["tutorial_step"]
    gate = "gate-based (tutorial)"
    rows.append(
        [
            "tutorial SGD step (V=8000, H=100, k=4, 20 tokens, float64), speed-up over the gate-based code",
            f"{tut['speedup'][gate]:.1f}×",
            f"{tut['one_thread_cpu_speedup'][gate]:.1f}×",
            f"≥ {tut['target_speedup_over_gate_based']:.0f}×",
            _yes(tut["target_met"]),
        ]
    )
    torch = r["torch"]
    if "skipped" in torch:
        rows.append(["batched float32 training vs PyTorch", "skipped", "-", "≥ 2×", "-"])
    else:
        rows += [
            [
                "batched float32 training (B=32, T=35, full BPTT), tokens/s ratio to PyTorch",
                f"{torch['training']['ratio']:.2f}×",
                f"{torch['one_thread']['training']['cpu_ratio']:.2f}×",
                f"≥ {torch['target_ratio']}×",
                _yes(torch["target_met"]),
            ],
            [
                "the same, PyTorch with `THP_MEM_ALLOC_ENABLE=1` (both sides in that process)",
                f"{torch['thp']['training']['ratio']:.2f}×",
                f"{torch['thp']['training']['cpu_ratio']:.2f}× (CPU time, 2 threads)",
                f"≥ {torch['target_thp_ratio']}×",
                _yes(torch["target_thp_met"]),
            ],
            [
                "evaluation (forward and loss) against PyTorch's no-grad forward",
                f"{torch['evaluation']['ratio']:.2f}×",
                f"{torch['one_thread']['evaluation']['cpu_ratio']:.2f}×",
                f"≥ {torch['target_eval_ratio']}×",
                _yes(torch["target_eval_met"]),
            ],
        ]
    peak = r["peak"]
    rows.append(
        [
            "the same training, fraction of the bound set by numpy's GEMM speed at its shapes",
            f"{peak['fraction_of_bound']:.3f}",
            f"{peak['one_thread_fraction_of_bound']:.2f}",
            f"≥ {peak['target_fraction']}",
            _yes(peak["target_met"]),
        ]
    )
    scaling = peak["thread_scaling"]
    rows.append(
        [
            "the engine's own training step, speed-up from one thread to two",
            f"{scaling['speedup']:.2f}×",
            "-",
            f"≥ {peak['target_thread_speedup']}×",
            _yes(peak["target_thread_met"]),
        ]
    )
    sweep = r["sweep"]
    if "skipped" not in sweep:
        rows.append(
            [
                "4-job sweep of the default experiment, joblib (2 workers) time / basic launcher time",
                f"{sweep['time_ratio']:.2f}",
                f"{sweep['cpu_seconds']['joblib'] / sweep['cpu_seconds']['basic']:.2f} (CPU, all processes)",
                f"≤ {sweep['target_time_ratio']}",
                _yes(sweep["target_met"]),
            ]
        )
    classes = r.get("class_output")
    if classes:
        at = classes["by_vocab"].get(str(classes["target_vocab"]))
        rows.append(
            [
                f"class-based softmax against the full one, training tokens/s at V={classes['target_vocab']}",
                f"{at['speedup']:.1f}×" if at else "-",
                f"{at['tokens_per_cpu_sec']['class'] / at['tokens_per_cpu_sec']['softmax']:.1f}× (CPU)" if at else "-",
                f"≥ {classes['target_speedup']:.0f}×",
                _yes(classes["target_met"]),
            ]
        )
    return [
        "## Targets",
        "",
        "Measured as the targets are set, on 2 threads by wall-clock time; beside it, the same comparison on one "
        "thread each by CPU time, which shows each side's work even when other jobs share the cores.",
        "",
        *_table(["target", "2 threads (wall)", "1 thread (CPU time)", "goal", "met on 2 threads"], rows),
    ]


def _tutorial(t: dict) -> list[str]:
    s = t["setting"]
    rows = [
        [
            name,
            f"{sec * 1e3:.1f}",
            f"±{t['spread'][name] * 50:.0f}%",
            f"{t['cpu_seconds_per_step'][name] * 1e3:.1f}",
            f"{t['speedup'][name]:.1f}×" if name in t["speedup"] else "1×",
        ]
        for name, sec in t["seconds_per_step"].items()
    ]
    profile = [[p["function"], f"{p['ms_per_call']:.2f}", f"{p['share'] * 100:.0f}%"] for p in t["profile"]]
    return [
        "## 1. One SGD step at the tutorial's setting",
        "",
        f"V={s['vocab_size']}, H={s['hidden_dim']}, bptt_truncate={s['bptt_truncate']}, "
        f"one {s['sentence_tokens']}-token "
        f"sentence, {s['dtype']}, gradient of the summed loss, learning rate 0.005; medians of {s['repeats']} "
        f'interleaved rounds. The engine\'s step is `backprop(reduction="sum", sparse_u=True)` plus the SGD '
        f"optimiser (only the sentence's columns of U are updated). Before timing, the three gradients agree "
        f"to {t['gradient_max_rel_err']:.1e} (max relative error).",
        "",
        *_table(
            ["implementation", "ms / step", "spread (IQR/2)", "CPU ms / step (all threads)", "engine is faster by"],
            rows,
        ),
        "On one thread each, by CPU time (which other work on the machine moves far less), the engine's speed-up is "
        + " and ".join(f"{v:.1f}× over {k}" for k, v in t["one_thread_cpu_speedup"].items())
        + ".",
        "",
        "Where the engine's step spends its own time (cProfile, main thread):",
        "",
        *_table(["function", "ms / step", "share"], profile),
    ]


def _torch(t: dict) -> list[str]:
    if "skipped" in t:
        return ["## 2. PyTorch CPU", "", f"Skipped: {t['skipped']}", ""]
    s, a = t["setting"], t["agreement"]
    rows = []
    for label, result in (("", t), (", PyTorch with THP", t["thp"])):
        for part in ("training", "evaluation"):
            rates, one = result[part]["tokens_per_sec"], t["one_thread"][part]["tokens_per_cpu_sec"]
            spread = result[part]["spread"]
            rows.append(
                [
                    part + label,
                    f"{rates['rnnexp engine']:,.0f} ±{spread['rnnexp engine'] * 50:.0f}%",
                    f"{rates['PyTorch']:,.0f} ±{spread['PyTorch'] * 50:.0f}%",
                    f"**{result[part]['ratio']:.2f}×**",
                    f"{one['rnnexp engine']:,.0f}" if not label else "-",
                    f"{one['PyTorch']:,.0f}" if not label else "-",
                    f"{t['one_thread'][part]['cpu_ratio']:.2f}×" if not label else "-",
                ]
            )
    grads = ", ".join(f"{k} {v:.1e}" for k, v in a["grad_max_rel_err"].items())
    return [
        "## 2. PyTorch CPU",
        "",
        f"B={s['batch']} sequences of T={s['seq_len']}, V={s['vocab_size']}, H={s['hidden_dim']}, {s['dtype']}, "
        "exact full "
        f"BPTT, one SGD step per batch on both sides (training); forward pass and loss (evaluation: the engine's "
        f"`token_nll`, PyTorch under `inference_mode`). PyTorch: `nn.Embedding` (U's columns) → `nn.RNN(tanh, "
        f"bias=False)` with a frozen identity input weight → `nn.Linear(bias=False)` → cross-entropy, holding the "
        f"engine's weights; at the start the losses agree to {a['loss_rel_err']:.1e} and the gradients to {grads} "
        f"(relative). Medians of {s['repeats']} interleaved rounds on 2 threads (the target), with spreads (IQR/2); "
        "the THP rows are the same contest in a second process started with `THP_MEM_ALLOC_ENABLE=1`; then both "
        "sides again on one thread, per CPU second, which measures each side's work whatever else the machine is "
        "doing.",
        "",
        *_table(
            [
                "",
                "rnnexp tokens/s",
                "PyTorch tokens/s",
                "ratio",
                "1 thread: rnnexp tokens/CPU-s",
                "PyTorch tokens/CPU-s",
                "ratio",
            ],
            rows,
        ),
    ]


def _peak(p: dict) -> list[str]:
    gemms = [
        [name, f"{p['gemm_gflops'][name]:.1f}", f"{sec * 1e3:.2f}"] for name, sec in p["gemm_seconds_per_batch"].items()
    ]
    profile = p["one_thread_profile_cpu_seconds_per_batch"]
    step = profile["training step"]
    rows = [[name, f"{sec * 1e3:.1f}", f"{sec / step * 100:.0f}%"] for name, sec in profile.items()]
    mflop = sum(p["flops_per_token"].values()) / 1e6
    return [
        "## 3. Fraction of numpy's matrix-multiply bound",
        "",
        f"The model costs {mflop:.2f} MFLOP per trained token at this size (three output-layer GEMMs of 2·H·V each, "
        f"plus 6·H² in the recurrence). numpy's own speed at the benchmark's shapes (N = B·T rows, float32, "
        f"2 threads):",
        "",
        *_table(["product", "GFLOP/s", "ms per batch"], gemms),
        f"Bound: {p['bound_tokens_per_sec']:,.0f} tokens/s. Training reaches {p['training_tokens_per_sec']:,.0f} "
        f"tokens/s = {p['training_gflops']:.1f} GFLOP/s, **{p['fraction_of_bound']:.3f} of the bound** on 2 threads "
        f"({p['one_thread_fraction_of_bound']:.2f} on one thread, by CPU time). The training rate is the step's "
        f"own, from the thread contest below; timed beside the 2-thread GEMMs it was "
        f"{p['training_beside_gemms_tokens_per_sec']:,.0f} tokens/s, sharing the cores with OpenBLAS's threads, "
        "which spin on for a while after each product.",
        "",
        "Profile of one training batch on one thread (CPU ms; the softmax's steps timed on one block of rows and "
        "scaled to all rows):",
        "",
        *_table(["part", "CPU ms per batch", "share"], rows),
        "The engine's step with one thread and with two (BLAS and output workers), taking turns in one process:",
        "",
        *_table(
            ["threads", "tokens/s", "spread (IQR/2)"],
            [
                [n, f"{rate:,.0f}", f"±{p['thread_scaling']['spread'][n] * 50:.0f}%"]
                for n, rate in p["thread_scaling"]["tokens_per_sec"].items()
            ],
        ),
        f"Speed-up from one thread to two: **{p['thread_scaling']['speedup']:.2f}×**.",
        "",
    ]


def _class_output(c: dict) -> list[str]:
    s = c["setting"]
    rows = [
        [
            f"{int(v):,}",
            f"{r['tokens_per_sec']['softmax']:,.0f} ±{r['spread']['softmax'] * 50:.0f}%",
            f"{r['tokens_per_sec']['class']:,.0f} ±{r['spread']['class'] * 50:.0f}%",
            f"**{r['speedup']:.1f}×**",
            f"{r['tokens_per_cpu_sec']['softmax']:,.0f}",
            f"{r['tokens_per_cpu_sec']['class']:,.0f}",
        ]
        for v, r in c["by_vocab"].items()
    ]
    return [
        "## 7. Class-based softmax against the full softmax",
        "",
        f"Training (B={s['batch']}, T={s['seq_len']}, H={s['hidden_dim']}, float32, full BPTT, SGD) with "
        f"`model.output=class` ({s['classes']} classes binned from Zipf word counts) and with the full softmax, "
        f"taking turns at each V, medians of {s['repeats']} rounds on 2 threads. The cost of both against V is the "
        "vocabulary plot of section 4.",
        "",
        *_table(
            ["V", "softmax tokens/s", "class tokens/s", "speed-up", "softmax tokens/CPU-s", "class tokens/CPU-s"], rows
        ),
    ]


def _scaling(s: dict, plots: dict[str, str]) -> list[str]:
    out = [
        "## 4. How cost grows",
        "",
        "Tokens per second of training (backprop + SGD step) on 2 threads (solid lines), tokens per CPU second on "
        "one thread (dashed: the work, which other jobs on the machine move far less) and the peak memory numpy "
        "allocates during one step (tracemalloc), one knob at a time, the others at V=8000, H=100, B=32, T=35, full "
        f"BPTT, float32. In chunk mode a call trains one chunk of k steps of B streams, carrying the hidden state. "
        f"Each of the {s['points']} distinct points is one measurement: medians of {s['repeats']} "
        "rounds in which every point takes its turn, ± half the interquartile range; the base point (marked *) "
        "belongs to several curves and is the same measurement in each.",
        "",
    ]
    for knob, series in s["sweeps"].items():
        out += [f"### {KNOB_LABELS[knob]}", "", f"![{knob}]({plots[knob]})", ""]
        header = (
            [knob]
            + [f"{label} tokens/s" for label in series]
            + [f"{label} 1 thread tokens/CPU-s" for label in series]
            + [f"{label} MiB" for label in series]
        )
        xs = next(iter(series.values()))["x"]
        rows = [
            [f"{x}{' *' if any(d['base'][i] for d in series.values()) else ''}"]
            + [f"{d['tokens_per_sec'][i]:,.0f} ±{d['spread'][i] * 50:.0f}%" for d in series.values()]
            + [f"{d['one_thread_tokens_per_cpu_sec'][i]:,.0f}" for d in series.values()]
            + [f"{d['peak_mib'][i]:.1f}" for d in series.values()]
            for i, x in enumerate(xs)
        ]
        out += _table(header, rows)
    return out


def _tracking(t: dict) -> list[str]:
    if "skipped" in t:
        return ["## 5. Tracking overhead", "", f"Skipped: {t['skipped']}", ""]
    rows = [
        [name, f"{t['cpu_seconds_per_run'][name]:.2f}", f"{sec:.2f} ±{t['spread'][name] * 50:.0f}%"]
        for name, sec in t["seconds_per_run"].items()
    ]
    return [
        "## 5. Tracking overhead",
        "",
        t["description"],
        "",
        *_table(["", "CPU seconds per run", "wall seconds per run"], rows),
        f"MLflow tracking adds **{t['overhead'] * 100:.1f}%** CPU time to a run ({t['overhead_cpu_seconds']:.2f} s; "
        f"{t['wall_overhead'] * 100:+.1f}% wall-clock): creating the run, its params, tags, dataset and artifacts "
        "cost about the same whatever the run's length, so the share shrinks as runs grow.",
        "",
    ]


def _sweep(t: dict) -> list[str]:
    if "skipped" in t:
        return ["## 6. Sweep scaling", "", f"Skipped: {t['skipped']}", ""]
    rows = [
        [name, f"{sec:.1f} ±{t['spread'][name] * 50:.0f}%"]
        + [f"{min(t['samples'][name]):.1f}–{max(t['samples'][name]):.1f}", f"{t['cpu_seconds'][name]:.1f}"]
        for name, sec in t["seconds"].items()
    ]
    return [
        "## 6. Sweep scaling",
        "",
        t["description"],
        "",
        *_table(["launcher", "seconds for the sweep (median ± IQR/2)", "range", "CPU seconds (all processes)"], rows),
        f"The joblib sweep takes **{t['time_ratio']:.2f}** of the basic launcher's time ({t['speedup']:.2f}× as fast).",
        "",
        "Where the time goes, from the runs' start and end times in the store (medians, seconds):",
        "",
        *_table(
            ["launcher", *t["phases"]["basic"]],
            [[name, *(f"{sec:.2f}" for sec in phase.values())] for name, phase in t["phases"].items()],
        ),
        "The joblib workers start as the sweep starts, each importing what a job needs ("
        f"{t['worker_start_seconds']:.1f} s in a fresh Python: Hydra, the trainer, MLflow and its database store), "
        f"while the sweep's own process opens the parent run; {THREADS} workers and that process share "
        f"{THREADS} cores, so the start-up takes longer than the basic launcher's.",
        "",
        "The least time a launcher of worker processes could take: the joblib sweep does "
        f"{t['cpu_seconds']['joblib']:.1f} CPU seconds of work, which spread perfectly over {THREADS} cores would "
        f"take {t['cpu_seconds']['joblib'] / THREADS:.1f} s, "
        f"**{t['cpu_floor_ratio']:.2f}** of the basic launcher's {t['seconds']['basic']:.1f} s (the target: "
        f"{t['target_time_ratio']}). That work is the jobs, the sweep's start-up, comparison and exit, and each "
        "worker's repeat of the imports the sweep's process has done; "
        + (
            "with jobs of this size, worker processes cannot reach the target on these cores."
            if t["cpu_floor_ratio"] > t["target_time_ratio"]
            else "the target is within that bound."
        ),
        "",
    ]


def write_markdown(results: dict, plots: dict[str, str], path: Path, notes: list[str]) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks.run_all` on {results['finished']} in {results['wall_seconds']:.0f} s. "
        "Every comparison ran its contenders side by side in one process, taking turns round after round, and "
        "reports medians; the machine is shared, so the load average is recorded with it. Regenerate rather than edit.",
        "",
        *_machine(results["machine"]),
        *_targets(results),
        *_tutorial(results["tutorial_step"]),
        *_torch(results["torch"]),
        *_peak(results["peak"]),
        *_scaling(results["scaling"], plots),
        *_tracking(results["tracking"]),
        *_sweep(results["sweep"]),
        *(_class_output(results["class_output"]) if "class_output" in results else []),
        "## Notes",
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    path.write_text("\n".join(lines))
