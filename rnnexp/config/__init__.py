"""The configuration layer: schemas registered with Hydra, and `resolve`, which validates them once."""

from hydra.core.config_store import ConfigStore

from rnnexp.config.dataset import DatasetConfig, SyntheticConfig
from rnnexp.config.resolve import as_tree, resolve
from rnnexp.config.schema import (
    BaselineConfig,
    ComposedRun,
    DiagnosticsConfig,
    EvalConfig,
    EvaluateConfig,
    GenerateConfig,
    GradcheckConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)

_store = ConfigStore.instance()
_store.store(name="run_schema", node=ComposedRun)
_store.store(name="generate_schema", node=GenerateConfig)
_store.store(name="evaluate_schema", node=EvaluateConfig)
_store.store(name="gradcheck_schema", node=GradcheckConfig)
_store.store(name="baseline_schema", node=BaselineConfig)

__all__ = [
    "BaselineConfig",
    "ComposedRun",
    "DatasetConfig",
    "DiagnosticsConfig",
    "EvalConfig",
    "EvaluateConfig",
    "GenerateConfig",
    "GradcheckConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "SyntheticConfig",
    "TrainConfig",
    "as_tree",
    "resolve",
]
