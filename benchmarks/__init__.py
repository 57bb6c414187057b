"""Throughput and scaling benchmarks: `python -m benchmarks.run_all` writes benchmarks/RESULTS.md."""
