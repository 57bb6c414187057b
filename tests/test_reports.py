"""README.md quotes only figures that the committed report files contain, and reports say what made them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import provenance

ROOT = Path(__file__).resolve().parents[1]
REPORT = re.compile(r"(?:benchmarks/RESULTS\.md|experiments/[a-z_]+/REPORT\.md)")
# A figure: a decimal number, or a whole number with a unit of measure (68×, 592 ms, 45%, 110 GFLOP/s).
FIGURE = re.compile(r"(?<![\w.=/-])(\d[\d,]*\.\d+|\d[\d,]*(?=\s?(?:×|ms\b|%|GFLOP/s|tokens/s)))(?![\w.]*\d)")


def quoted_figures(readme: str) -> list[tuple[str, str]]:
    """(report path, figure) for each figure in a README paragraph (not a table) that names a report."""
    quoted = []
    for block in re.split(r"\n\s*\n", readme):
        lines = [line for line in block.splitlines() if not line.lstrip().startswith(("|", "    ", "```"))]
        text = "\n".join(lines)
        reports = REPORT.findall(text)
        for path in dict.fromkeys(reports):
            quoted += [(path, figure) for figure in FIGURE.findall(text)]
    return quoted


def contains(report: str, figure: str) -> bool:
    """The same number as a whole token of the report (1.84 is not 1.845, 592 is not 592.5)."""
    number = re.escape(figure.replace(",", ""))
    return re.search(rf"(?<![\d.]){number}(?![\d]|\.\d)", report.replace(",", "")) is not None


def test_the_figure_finder_reads_what_a_reader_would_call_a_figure() -> None:
    text = (
        "From `make bench` (`benchmarks/RESULTS.md`):\n- one step takes 8.7 ms against 592 ms (68×), at V=8000\n"
        "- 0.56 of the bound, 1,234 tokens/s\n\n| a table | 9.9 ms | benchmarks/RESULTS.md |\n\nno report: 3.3 ms"
    )
    assert [f for _, f in quoted_figures(text)] == ["8.7", "592", "68", "0.56", "1,234"]
    assert contains("| rnnexp engine | 8.7 | ±19% |", "8.7") and not contains("592.5 ms", "592")
    assert not contains("1.845×", "1.84") and contains("1234 tokens", "1,234")


def test_every_figure_the_readme_quotes_is_in_the_report_it_names() -> None:
    missing = [
        f"{figure} (from {path})"
        for path, figure in quoted_figures((ROOT / "README.md").read_text())
        if not contains((ROOT / path).read_text(), figure)
    ]
    assert not missing, f"README.md quotes figures its reports do not contain: {', '.join(missing)}"


@pytest.mark.parametrize("report", ["experiments/truncation/REPORT.md", "experiments/tutorial/REPORT.md"])
def test_reports_record_their_commit_dirty_flag_and_code_hash(report: str) -> None:
    text = (ROOT / report).read_text()
    assert re.search(r"commit `[0-9a-f]{12}` \(uncommitted changes: (yes|no)\), code hash `[0-9a-f]{12}`", text)
    assert "/work/" not in text and "/home/" not in text  # paths relative to the project


def test_the_code_hash_follows_the_bytes_of_the_code(tmp_path: Path) -> None:
    first = provenance.code_hash(["experiments/provenance.py"])
    assert first == provenance.code_hash(["experiments/provenance.py"]) and len(first) == 12
    assert first != provenance.code_hash(["experiments/provenance.py", "tests/test_reports.py"])
    stamp = provenance.provenance([])
    assert re.fullmatch(r"[0-9a-f]{12}|unknown", stamp.commit) and stamp.dirty in (True, False, None)


def test_the_code_hash_covers_code_and_not_the_reports_outputs() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in provenance.code_files(["experiments/truncation", "benchmarks"])}
    assert {"experiments/truncation/report.py", "experiments/truncation/single_seed_study.json"} <= files
    assert not files & {"experiments/truncation/REPORT.md", "experiments/truncation/excess_heatmap.png"}
    assert not files & {"benchmarks/RESULTS.md", "benchmarks/results.json", "benchmarks/scaling_batch.png"}
