"""`python -m experiments.truncation.study`: the truncation study end to end, fair protocol included.

1. the learning-rate grid (conf/experiment/truncation_lr_grid.yaml), one multirun;
2. the choice: per model family, the rate of lowest mean best validation loss (`grid.choose`);
3. the fair sweep (truncation_fair.yaml), one multirun per family at its rate, into the MLflow
   experiment `<fair>_<family>` (every cell of a family at its rate);
4. the fixed-rate sweep (truncation_study.yaml), as before;
5. the report over all of them (`experiments.truncation.report`).
Every sweep is `python -m rnnexp.run -m ...` in a subprocess, as a person would type it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from experiments.truncation import grid
from experiments.truncation.report import children, find_sweep
from rnnexp import cli, tracking
from rnnexp.config import CONF_DIR
from rnnexp.errors import UserError

log = logging.getLogger(__name__)

CELL_AXIS = "experiment/truncation_cell"


def family_of(cell: str) -> str:
    """The model family of a truncation cell's config name: lstm_full -> lstm, window4 -> rnn."""
    prefix = cell.split("_", 1)[0]
    return prefix if prefix in ("lstm", "gru") else "rnn"


def sweep_params(experiment: str) -> dict[str, str]:
    """What an experiment's multirun sweeps (its hydra.sweeper.params), composed as `rnnexp.run -m` would.

    Inside another Hydra app (this one's main) Hydra's state is set aside while conf/ is composed.
    """
    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose("config", [f"experiment={experiment}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
        GlobalHydra.instance().hydra = outer
    return {str(axis): str(values) for axis, values in composed.hydra.sweeper.params.items()}


def swept_cells(experiment: str) -> list[str]:
    """The truncation cells an experiment's multirun sweeps."""
    return [cell.strip() for cell in sweep_params(experiment)[CELL_AXIS].split(",")]


def fair_sweeps(experiment: str, rates: dict[str, float]) -> dict[str, list[str]]:
    """Per family, the overrides of its fair multirun: its cells, at its chosen rate."""
    cells: dict[str, list[str]] = {}
    for cell in swept_cells(experiment):
        cells.setdefault(family_of(cell), []).append(cell)
    missing = sorted(set(cells) - set(rates))
    if missing:
        raise UserError(
            f"the learning-rate grid chose no rate for {', '.join(missing)}: every rate failed, or the grid "
            f"did not train that family; see its jobs in MLflow."
        )
    return {
        family: [
            f"experiment={experiment}",
            f"experiment_name={experiment}_{family}",
            f"{CELL_AXIS}={','.join(mine)}",
            f"optim.lr={rates[family]:g}",
        ]
        for family, mine in cells.items()
    }


def run(module: str, overrides: Sequence[str]) -> None:
    command = [sys.executable, "-m", module, *overrides]
    log.info("running %s", " ".join(command[1:]))
    subprocess.run(command, check=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="study")
@cli.reports_user_errors
def main(cfg: DictConfig) -> None:
    common = [f"tracking_uri={cfg.tracking_uri}"] if cfg.tracking_uri else []
    sweep_overrides = [*common, *cfg.sweep_overrides]
    run("rnnexp.run", ["-m", f"experiment={cfg.grid_experiment}", *sweep_overrides, *cfg.grid_overrides])
    client = tracking.connect(tracking.resolve_tracking_uri(cfg.tracking_uri))
    choices = grid.choose(grid.read_grid(client, children(client, find_sweep(client, cfg.grid_experiment, None))))
    for choice in choices.values():
        log.info("%s: lr %g%s", choice.family, choice.lr, " (on the grid's edge)" if choice.on_edge else "")
    fair = fair_sweeps(cfg.fair_experiment, {family: choice.lr for family, choice in choices.items()})
    for overrides in fair.values():
        run("rnnexp.run", ["-m", *overrides, *sweep_overrides])
    run("rnnexp.run", ["-m", f"experiment={cfg.fixed_experiment}", *sweep_overrides])
    fair_names = ",".join(f"{cfg.fair_experiment}_{family}" for family in fair)
    report = [
        f"experiment_name={cfg.fixed_experiment}",
        f"also=[{fair_names}]",
        f"grid_experiment={cfg.grid_experiment}",
        f"report_dir={cfg.report_dir}",
        f"checkpoint_dir={cfg.checkpoint_dir}",
    ]
    run("experiments.truncation.report", [*common, *report])


if __name__ == "__main__":
    cli.guard(main)
