"""The gated cells' PyTorch benchmark at a tiny size, so that `make bench` keeps working; no time is asserted."""

import pytest

from benchmarks import bench_gated


@pytest.mark.slow
def test_the_pytorch_twins_compute_the_gated_cells_function_and_the_report_reads_it():
    pytest.importorskip("torch", reason="torch is the optional benchmark dependency (pip install -e '.[bench]')")
    result = bench_gated.run(smoke=True)
    assert set(result["cells"]) == {"lstm", "gru"}
    for r in result["cells"].values():
        assert r["agreement"]["loss_rel_err"] < 1e-5 and max(r["agreement"]["grad_max_rel_err"].values()) < 1e-3
        assert r["training"]["ratio"] > 0 and r["one_thread"]["cpu_ratio"] > 0
        parts = r["cpu_seconds_per_step"]
        assert {"step", "output layer", "batched products", "recurrence products", "gates", "rest"} == set(parts)
        assert parts["step"] > 0
    text = "\n".join(bench_gated.markdown(result))
    assert "| lstm |" in text and "| gru |" in text and "| output layer |" in text


def test_without_torch_the_comparison_is_skipped_with_a_message(monkeypatch):
    monkeypatch.setattr(bench_gated, "try_import_torch", lambda: None)
    result = bench_gated.run(smoke=True)
    assert "pip install" in result["skipped"]
    assert bench_gated.markdown(result)[2].startswith("Skipped: torch is not installed")
    assert bench_gated.notes(result) == []
