"""README.md quotes only figures that the committed report files contain, and reports say what made them."""

from __future__ import annotations

import re
import subprocess
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


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout


def test_the_dirty_flag_says_whether_the_tracked_code_differs_from_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no checkout above tmp_path counts
    files = {"rnnexp/model.py": "x = 1\n", "conf/config.yaml": "seed: 1\n", "rnnexp/REPORT.md": "old\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)

    def stamp() -> tuple[str, bool | None]:
        made = provenance.provenance([])
        return made.commit, made.dirty

    assert stamp() == ("unknown", None)  # not a git checkout: nothing known
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "code")
    head = git(tmp_path, "rev-parse", "HEAD")[:12]
    assert stamp() == (head, False)
    (tmp_path / "rnnexp/REPORT.md").write_text("new\n")  # a report's output, not its code
    (tmp_path / "rnnexp/scratch.py").write_text("y = 2\n")  # untracked: no part of the commit's code
    assert stamp() == (head, False)
    (tmp_path / "conf/config.yaml").write_text("seed: 2\n")
    assert stamp() == (head, True)
    git(tmp_path, "commit", "-qam", "more code")
    assert stamp() == (git(tmp_path, "rev-parse", "HEAD")[:12], False)


def test_the_code_hash_covers_code_and_not_the_reports_outputs() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in provenance.code_files(["experiments/truncation", "benchmarks"])}
    assert {"experiments/truncation/report.py", "experiments/truncation/single_seed_study.json"} <= files
    assert not files & {"experiments/truncation/REPORT.md", "experiments/truncation/excess_heatmap.png"}
    assert not files & {"benchmarks/RESULTS.md", "benchmarks/results.json", "benchmarks/scaling_batch.png"}
