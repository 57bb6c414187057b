"""Tiny versions of every benchmark, so that `make bench` keeps working; no benchmark's speed is asserted,
only that the timers measure what they say (on sleeps of known length)."""

import json
import time

import numpy as np
import pytest

from benchmarks import bench_class_output, bench_peak, bench_scaling, bench_torch, bench_tutorial_step
from benchmarks.common import interleaved, machine_info, peak_bytes, profile_top


def test_interleaved_timing_gives_every_contender_its_samples():
    calls = {"a": 0, "b": 0}

    def sleep(name, seconds):
        calls[name] += 1
        time.sleep(seconds)

    contenders = {"a": lambda: sleep("a", 0.001), "b": lambda: sleep("b", 0.02)}
    timings = interleaved(contenders, repeats=3, min_seconds=0.0, block=2)
    assert [len(t.samples) for t in timings.values()] == [3, 3]  # first of each block discarded
    assert calls == {"a": 1 + 3 * 2, "b": 1 + 3 * 2}  # warm-up call + rounds × block
    a, b = timings["a"], timings["b"]
    assert all(t.median == np.median(t.samples) and t.cpu_median == np.median(t.cpu_samples) for t in (a, b))
    assert 0.001 <= a.median < b.median and b.median >= 0.02  # a sleep never ends early
    assert b.cpu_median < b.median / 2  # process time: a sleeping process uses next to none


def test_profile_top_charges_each_function_its_own_time_per_call():
    rows = profile_top(lambda: time.sleep(0.01), calls=3)
    assert "sleep" in rows[0]["function"] and rows[0]["ms_per_call"] >= 10 and rows[0]["share"] > 0.9
    assert all(row["ms_per_call"] > 0 for row in rows) and sum(row["share"] for row in rows) <= 1 + 1e-9


def test_peak_bytes_sees_numpy_buffers():
    assert peak_bytes(lambda: np.ones(1_000_000)) >= 8_000_000


def test_machine_info_names_blas_and_threads():
    info = machine_info()
    assert info["usable_cores"] >= 1 and info["numpy"] == np.__version__
    assert any(pool["internal_api"] for pool in info["thread_pools"])
    assert set(info["environment"]) >= {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}


def test_tutorial_step_agrees_with_the_tutorials_code():
    result = bench_tutorial_step.run(smoke=True)
    assert result["gradient_max_rel_err"] < 1e-9
    assert set(result["speedup"]) == set(result["one_thread_cpu_speedup"]) == {"gate-based (tutorial)", "WildML NumPy"}
    profile = result["profile"]
    assert profile and all(p["ms_per_call"] > 0 and 0 < p["share"] <= 1 for p in profile)
    # each row's ms per call over its share of the time is the same whole: the profiled step's ms per call
    totals = [p["ms_per_call"] / p["share"] for p in profile]
    assert totals == pytest.approx([totals[0]] * len(totals))


@pytest.mark.slow
def test_pytorch_twin_computes_the_engines_function():
    pytest.importorskip("torch", reason="torch is the optional benchmark dependency (pip install -e '.[bench]')")
    result = bench_torch.run(smoke=True)
    assert result["agreement"]["loss_rel_err"] < 1e-5
    assert max(result["agreement"]["grad_max_rel_err"].values()) < 1e-3
    assert result["training"]["ratio"] > 0 and result["evaluation"]["ratio"] > 0
    assert result["one_thread"]["training"]["cpu_ratio"] > 0
    assert result["thp"]["training"]["ratio"] > 0 and result["thp"]["evaluation"]["ratio"] > 0  # its own process


def test_pytorch_comparison_is_skipped_with_a_message_without_torch(monkeypatch):
    monkeypatch.setattr(bench_torch, "try_import_torch", lambda: None)
    assert "pip install" in bench_torch.run(smoke=True)["skipped"]


def test_flops_per_token_at_the_tutorial_size():
    assert sum(bench_peak.flops_per_token(8000, 100).values()) == 4_860_000


def test_peak_fraction_and_profile():
    result = bench_peak.run(smoke=True)
    assert result["fraction_of_bound"] > 0
    assert result["training_gflops"] > 0 and all(g > 0 for g in result["gemm_gflops"].values())
    assert "softmax: exp" in result["one_thread_profile_cpu_seconds_per_batch"]
    assert set(result["thread_scaling"]["tokens_per_sec"]) == {"1", "2"} and result["thread_scaling"]["speedup"] > 0


def test_scaling_sweeps_every_knob_and_memory_grows_with_the_vocabulary():
    result = bench_scaling.run(smoke=True)
    assert set(result["sweeps"]) == {"vocab_size", "hidden_dim", "batch", "bptt_truncate", "seq_len"}
    assert set(result["sweeps"]["bptt_truncate"]) == {"window", "chunk"}
    assert set(result["sweeps"]["vocab_size"]) == {"softmax", "class"}
    vocab = result["sweeps"]["vocab_size"]["softmax"]
    assert vocab["x"] == [20, 40] and vocab["peak_mib"][1] > vocab["peak_mib"][0]


def test_class_output_against_the_full_softmax_at_each_vocabulary():
    result = bench_class_output.run(smoke=True)
    assert list(result["by_vocab"]) == ["300", "1200"]
    assert all(
        r["speedup"] > 0 and set(r["tokens_per_sec"]) == {"softmax", "class"} for r in result["by_vocab"].values()
    )


@pytest.mark.slow
def test_run_all_writes_results_markdown_and_plots(tmp_path):
    from benchmarks.run_all import run_all

    run_all(tmp_path, smoke=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"tutorial_step", "torch", "peak", "scaling", "tracking", "sweep", "class_output"} <= set(results)
    assert results["tracking"]["cpu_seconds_per_run"]["with MLflow tracking"] > 0
    assert results["sweep"]["speedup"] > 0
    text = (tmp_path / "RESULTS.md").read_text()
    for heading in (
        "## Machine",
        "## Targets",
        "## 1.",
        "## 2.",
        "## 3.",
        "## 4.",
        "## 5.",
        "## 6.",
        "## 7.",
        "## Notes",
    ):
        assert heading in text
    assert len(list(tmp_path.glob("scaling_*.png"))) == 5
