"""The configuration layer: schemas registered with Hydra, and `resolve`, which validates them once."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from rnnexp.config.dataset import DatasetConfig, SyntheticConfig
from rnnexp.config.resolve import as_tree, resolve
from rnnexp.config.schema import (
    CheckGradientsConfig,
    DiagnosticsConfig,
    EvalConfig,
    EvaluateConfig,
    GenerateConfig,
    ModelConfig,
    NgramConfig,
    OptimConfig,
    RepairConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    UiConfig,
)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

_store = ConfigStore.instance()
_store.store(name="run_schema", node=RunConfig)
_store.store(name="generate_schema", node=GenerateConfig)
_store.store(name="evaluate_schema", node=EvaluateConfig)
_store.store(name="check_gradients_schema", node=CheckGradientsConfig)
_store.store(name="ngram_schema", node=NgramConfig)
_store.store(name="repair_schema", node=RepairConfig)
_store.store(name="ui_schema", node=UiConfig)

__all__ = [
    "NgramConfig",
    "DatasetConfig",
    "DiagnosticsConfig",
    "EvalConfig",
    "EvaluateConfig",
    "GenerateConfig",
    "CheckGradientsConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "RepairConfig",
    "ScheduleConfig",
    "SyntheticConfig",
    "TrainConfig",
    "UiConfig",
    "as_tree",
    "compose_run",
    "resolve",
]


def compose_run(overrides: list[str]) -> DictConfig:
    """The run config `python -m rnnexp.run <overrides>` would compose, from code: studies, benchmarks, tests.

    Inside another Hydra app (a report's main) Hydra is already initialised; its state is set aside
    while the project's conf/ is composed, then put back.
    """
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        global_hydra.clear()
        global_hydra.hydra = outer
