"""`python -m rnnexp.run` with a mistake: one line on stderr naming it, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_setup import run_cli


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hidden_dimm=5", "error: Could not override 'hidden_dimm'. Key 'hidden_dimm' not in 'ComposedRun'"),
        ("hidden_dim=-5", "error: hidden_dim must be >= 1, got -5."),
        pytest.param(
            "dataset=nope",
            "error: In 'config': Could not find 'dataset/nope' Available options in 'dataset': ptb",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_bad_override_is_one_line_and_exit_status_2(tmp_path: Path, override: str, message: str) -> None:
    result = run_cli(tmp_path, override)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message)
    assert not (tmp_path / "mlflow.db").exists()
