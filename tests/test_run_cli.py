"""`python -m rnnexp.run` with a mistake: one line on stderr naming it, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from runner_setup import command, run_cli


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hidden_dimm=5", "error: Could not override 'hidden_dimm'. Key 'hidden_dimm' not in 'RunConfig'"),
        # a knob has one name, its full path: the old top-level shortcut is refused with it
        (
            "hidden_dim=50",
            "error: Could not override 'hidden_dim'. Key 'hidden_dim' not in 'RunConfig'; "
            "did you mean model.hidden_dim? (--help",
        ),
        (
            "batch_size=5",
            "error: Could not override 'batch_size'. Key 'batch_size' not in 'RunConfig'; did you "
            "mean train.batch_size, eval.batch_size or diagnostics.batch_size? (--help",
        ),
        ("model.hidden_dim=-5", "error: model.hidden_dim must be >= 1, got -5."),
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


@pytest.mark.parametrize("args", [("model.hidden_dim=-5",), ("--help",), ("--cfg", "job")])
def test_a_config_error_help_and_cfg_answer_without_importing_mlflow(tmp_path: Path, args: tuple[str, ...]) -> None:
    """MLflow's import is most of a run's start-up: what needs no store must not wait for it."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = {command(tmp_path, *args)[2:]!r}\n"
        "code = 0\n"
        "try:\n"
        "    runpy.run_module('rnnexp.run', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    code = done.code\n"
        "print('exit', code, 'mlflow' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stderr.splitlines()[-1] == f"exit {2 if args[0].startswith('model.') else 0} False"
