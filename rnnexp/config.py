"""The typed schema of a run's config, registered in Hydra's ConfigStore.

Hydra merges `conf/config.yaml` and its groups into these dataclasses, so a typo in an override or
a value of the wrong type fails while the config is composed. Values that have the right type but
make no sense (`hidden_dim=-5`) are caught by `validate`, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.data.config import DatasetConfig
from rnnexp.data.config import validate as validate_dataset
from rnnexp.diagnostics_hook import DiagnosticsConfig
from rnnexp.diagnostics_hook import validate as validate_diagnostics
from rnnexp.errors import UserError
from rnnexp.model import DTYPES, TRUNCATIONS
from rnnexp.optim import OPTIMIZERS
from rnnexp.schedule import ScheduleConfig
from rnnexp.schedule import validate as validate_schedule


@dataclass
class ModelConfig:
    hidden_dim: int = MISSING
    bptt_truncate: int = MISSING
    truncation: str = MISSING  # window (the tutorial's), chunk or full
    dtype: str = "float32"
    seed: int = MISSING
    sparse_u: bool = True  # update only the columns of U a batch used (exact for sgd)


@dataclass
class OptimConfig:
    """An optimiser and its knobs; each optimiser reads only its own."""

    name: str = "sgd"
    lr: float = MISSING
    clip_norm: float | None = None  # scale gradients to this global L2 norm; null: no clipping
    momentum: float = 0.9  # momentum
    rho: float = 0.9  # rmsprop
    beta1: float = 0.9  # adam
    beta2: float = 0.999  # adam
    eps: float = 1e-8  # adagrad, rmsprop, adam


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    reduction: str = "mean"  # mean: loss per token; sum: per batch, as the tutorial's sgd_step
    eval_batch_size: int = 256
    log_every: int = 20  # steps between logged training metrics
    flush_every_s: float = 15.0  # seconds between metric uploads to MLflow (batched: cheap)
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (0: only at epoch ends)
    checkpoint_dir: str = "checkpoints"
    samples: int = 5  # sentences generated at the end of the run
    sample_max_len: int = 30


@dataclass
class RunConfig:
    """The root config: top-level knobs that the groups interpolate, then the groups."""

    hidden_dim: int = MISSING
    bptt_truncate: int = MISSING
    truncation: str = MISSING
    vocab_size: int = MISSING
    lr: float = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment_name: str = "rnnexp"
    run_name: str | None = None
    resume: str | None = None  # a run id or a checkpoint path to continue
    blas_threads: int | None = None  # null: BLAS default (1 per job in a parallel sweep)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)


ConfigStore.instance().store(name="run_schema", node=RunConfig)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: DictConfig) -> RunConfig:
    """The resolved config as a `RunConfig`; a UserError names the first impossible value."""
    try:
        run: RunConfig = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"bad config: {str(err).splitlines()[0]}.") from None
    model, optim, train = run.model, run.optim, run.train
    _require(model.hidden_dim >= 1, f"hidden_dim must be >= 1, got {model.hidden_dim}.")
    _require(model.bptt_truncate >= 1, f"bptt_truncate must be >= 1, got {model.bptt_truncate}.")
    _require(
        model.truncation in TRUNCATIONS,
        f"truncation must be one of {', '.join(TRUNCATIONS)}, got {model.truncation!r}.",
    )
    _require(model.dtype in DTYPES, f"model.dtype must be one of {', '.join(DTYPES)}, got {model.dtype!r}.")
    _require(optim.name in OPTIMIZERS, f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {optim.name!r}.")
    _require(optim.lr > 0, f"lr must be > 0, got {optim.lr}.")
    _require(optim.clip_norm is None or optim.clip_norm > 0,
             f"optim.clip_norm must be > 0 or null, got {optim.clip_norm}.")
    _require(train.epochs >= 1, f"epochs must be >= 1, got {train.epochs}.")
    _require(train.batch_size >= 1, f"batch_size must be >= 1, got {train.batch_size}.")
    _require(train.reduction in ("mean", "sum"), f"train.reduction must be mean or sum, got {train.reduction!r}.")
    for knob in ("eval_batch_size", "log_every"):
        _require(getattr(train, knob) >= 1, f"train.{knob} must be >= 1, got {getattr(train, knob)}.")
    _require(train.flush_every_s >= 0, f"train.flush_every_s must be >= 0, got {train.flush_every_s}.")
    _require(train.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0, got {train.checkpoint_every}.")
    _require(train.samples >= 0, f"train.samples must be >= 0, got {train.samples}.")
    _require(run.blas_threads is None or run.blas_threads >= 1,
             f"blas_threads must be >= 1 or null, got {run.blas_threads}.")
    validate_schedule(run.schedule)
    validate_dataset(run.dataset)
    validate_diagnostics(run.diagnostics)
    return run


def saved(tree: dict) -> DictConfig:
    """A run's config as its checkpoint keeps it (plain data), typed again."""
    return OmegaConf.merge(OmegaConf.structured(RunConfig), tree)



@dataclass
class GenerateConfig:
    """`python -m rnnexp.generate run_id=... num=5 temperature=0.8`"""

    run_id: str = MISSING
    num: int = 5
    temperature: float = 1.0
    top_k: int | None = None
    max_len: int = 30
    seed: int = 0
    checkpoint: str = "best"  # best (on validation) or last
    checkpoint_dir: str = "checkpoints"
    tracking_uri: str | None = None


@dataclass
class EvaluateConfig:
    """`python -m rnnexp.evaluate run_id=... split=test` (and `dataset=...` to score other data)."""

    run_id: str = MISSING
    split: str = "test"
    checkpoint: str = "best"
    checkpoint_dir: str = "checkpoints"
    batch_size: int = 256
    tracking_uri: str | None = None
    dataset: DatasetConfig | None = None  # null: the dataset the run trained on
    vocab_size: int = 100_000  # another dataset's words kept before mapping to the run's vocabulary


ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)
ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
