"""A composed config becomes a `RunConfig` here, once: aliases dropped, `auto` settled, every value checked.

Every impossible value is a UserError naming the knob and what it must be, raised before any work
starts. The checks live only here; the engine and the trainer trust what they are given.
"""

from __future__ import annotations

from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.config.dataset import DatasetConfig
from rnnexp.config.dataset import validate as validate_dataset
from rnnexp.config.schema import (
    ALIASES,
    CELLS,
    DTYPES,
    OPTIMIZERS,
    OUTPUTS,
    PROTOCOLS,
    SCHEDULES,
    TRUNCATIONS,
    DiagnosticsConfig,
    EvalConfig,
    KneserNeyConfig,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
)
from rnnexp.errors import UserError

HYDRA_KEYS = ("hydra",)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _one_of(value: str, choices: tuple[str, ...], knob: str) -> None:
    _require(value in choices, f"{knob} must be one of {', '.join(choices)}, got {value!r}.")


def resolve(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """The composed config (or a saved one, plain data) as a validated `RunConfig`."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        tree = {key: value for key, value in cast(dict, plain).items() if key not in (*ALIASES, *HYDRA_KEYS)}
        run = cast(RunConfig, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), tree)))
    except OmegaConfBaseException as err:
        raise UserError(f"bad config: {str(err).splitlines()[0]}.") from None
    validate(run)
    return run


def as_tree(run: RunConfig) -> dict[str, Any]:
    """The config as plain nested data: what a checkpoint and `config.yaml` keep."""
    return cast(dict, OmegaConf.to_container(OmegaConf.structured(run)))


def validate(run: RunConfig) -> None:
    """Check every knob, and settle `eval.protocol=auto` for this dataset and truncation."""
    validate_model(run.model)
    optim, train = run.optim, run.train
    _one_of(optim.name, OPTIMIZERS, "optim.name")
    _require(optim.lr > 0, f"lr must be > 0, got {optim.lr}.")
    _require(
        optim.clip_norm is None or optim.clip_norm > 0, f"optim.clip_norm must be > 0 or null, got {optim.clip_norm}."
    )
    _require(
        optim.average_from_epoch is None or optim.average_from_epoch >= 0,
        f"optim.average_from_epoch must be >= 0 or null, got {optim.average_from_epoch}.",
    )
    _require(train.epochs >= 1, f"epochs must be >= 1, got {train.epochs}.")
    _require(train.batch_size >= 1, f"batch_size must be >= 1, got {train.batch_size}.")
    _require(train.reduction in ("mean", "sum"), f"train.reduction must be mean or sum, got {train.reduction!r}.")
    _require(
        train.patience is None or train.patience >= 1, f"train.patience must be >= 1 or null, got {train.patience}."
    )
    _require(train.log_every >= 1, f"train.log_every must be >= 1, got {train.log_every}.")
    _require(train.flush_every_s >= 0, f"train.flush_every_s must be >= 0, got {train.flush_every_s}.")
    _require(train.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0, got {train.checkpoint_every}.")
    _require(train.samples >= 0, f"train.samples must be >= 0, got {train.samples}.")
    _require(
        run.blas_threads is None or run.blas_threads >= 1, f"blas_threads must be >= 1 or null, got {run.blas_threads}."
    )
    validate_schedule(run.schedule)
    validate_diagnostics(run.diagnostics)
    validate_dataset(run.dataset)
    run.eval.protocol = settle_protocol(run.eval, run)
    run.baseline.enabled = settle_baseline(run.baseline, run.dataset)


def validate_model(model: ModelConfig) -> None:
    _one_of(model.cell, CELLS, "model.cell")
    _one_of(model.truncation, TRUNCATIONS, "truncation")
    _one_of(model.dtype, DTYPES, "model.dtype")
    _one_of(model.output, OUTPUTS, "model.output")
    _require(model.hidden_dim >= 1, f"hidden_dim must be >= 1, got {model.hidden_dim}.")
    _require(model.bptt_truncate >= 1, f"bptt_truncate must be >= 1, got {model.bptt_truncate}.")
    _require(model.layers >= 1, f"model.layers must be >= 1, got {model.layers}.")
    _require(
        model.embedding_dim is None or model.embedding_dim >= 1,
        f"model.embedding_dim must be >= 1 or null, got {model.embedding_dim}.",
    )
    _require(0.0 <= model.dropout < 1.0, f"model.dropout must lie in [0, 1), got {model.dropout}.")
    _require(model.classes is None or model.classes >= 1, f"model.classes must be >= 1 or null, got {model.classes}.")
    if model.cell == "rnn":
        gated_only = {
            "layers": model.layers != 1,
            "embedding_dim": model.embedding_dim is not None,
            "dropout": model.dropout != 0.0,
            "tie_weights": model.tie_weights,
        }
        used = [knob for knob, set_ in gated_only.items() if set_]
        _require(
            not used,
            f"model.{', model.'.join(used)} apply to gated cells only: the tutorial's RNN has none "
            "of them; use model=gru or model=lstm, or drop the override.",
        )
    embedding = model.embedding_dim or model.hidden_dim
    _require(
        not model.tie_weights or embedding == model.hidden_dim,
        f"model.tie_weights needs embedding_dim = hidden_dim, got {embedding} and {model.hidden_dim}: "
        "set model.embedding_dim=null or untie the weights.",
    )


def validate_schedule(cfg: ScheduleConfig) -> None:
    _require(cfg.name in SCHEDULES, f"unknown schedule {cfg.name!r}: choose one of {', '.join(SCHEDULES)}.")
    _require(
        0 < cfg.factor <= 1 and 0 < cfg.gamma <= 1,
        f"schedule factor and gamma must lie in (0, 1], got {cfg.factor} and {cfg.gamma}.",
    )
    _require(
        cfg.evaluate_loss_after >= 1 and cfg.step_epochs >= 1,
        "schedule evaluate_loss_after and step_epochs must be >= 1.",
    )
    _require(cfg.monitor in ("train", "valid"), f"schedule monitor must be 'train' or 'valid', got {cfg.monitor!r}.")


def validate_diagnostics(cfg: DiagnosticsConfig) -> None:
    _require(cfg.max_depth >= 0, f"diagnostics.max_depth must be >= 0, got {cfg.max_depth}.")
    _require(cfg.batch_size >= 1, f"diagnostics.batch_size must be >= 1, got {cfg.batch_size}.")
    _require(
        cfg.figure_interval_s is None or cfg.figure_interval_s >= 0,
        f"diagnostics.figure_interval_s must be >= 0 or null, got {cfg.figure_interval_s}.",
    )


def is_word_level_real_data(dataset: DatasetConfig) -> bool:
    return dataset.name in ("ptb", "reddit") or (dataset.name == "text" and dataset.level == "word")


def validate_kn_orders(orders: list[int], knob: str = "baseline.orders") -> None:
    _require(bool(orders), f"{knob} is empty: give Kneser–Ney orders between 1 and 5, e.g. [2,3,4,5].")
    bad = [order for order in orders if not 1 <= order <= 5]
    _require(not bad, f"Kneser–Ney orders must lie between 1 and 5, got {bad}: fix {knob}.")


def settle_baseline(cfg: KneserNeyConfig, dataset: DatasetConfig) -> bool:
    """Whether the run logs the Kneser–Ney baseline: `null` means on for word-level real data."""
    validate_kn_orders(cfg.orders)
    applies = is_word_level_real_data(dataset)
    if cfg.enabled and not applies:
        reference = "its oracle is the reference" if dataset.name == "synthetic" else "it is character-level data"
        raise UserError(
            f"baseline.enabled=true needs word-level real data, but {dataset.name} is not ({reference}): "
            "drop the override."
        )
    return applies if cfg.enabled is None else cfg.enabled


def is_stream_data(run: RunConfig) -> bool:
    """Data whose state carries from one token to the next: chunk training, or PTB in stream mode."""
    return run.model.truncation == "chunk" or (run.dataset.name == "ptb" and run.dataset.mode == "stream")


def settle_protocol(cfg: EvalConfig, run: RunConfig) -> str:
    """The protocol that matches how the model is trained: `auto` becomes stateful or sentence."""
    _one_of(cfg.protocol, PROTOCOLS, "eval.protocol")
    _require(cfg.batch_size >= 1, f"eval.batch_size must be >= 1, got {cfg.batch_size}.")
    _require(cfg.segment_length >= 1, f"eval.segment_length must be >= 1, got {cfg.segment_length}.")
    stream = is_stream_data(run)
    if cfg.protocol == "auto":
        return "stateful" if stream else "sentence"
    _require(
        cfg.protocol != "stateful" or stream,
        "eval.protocol=stateful needs stream data, but this model trains on sentences from a zero state: "
        "use eval.protocol=sentence (or auto), or train with truncation=chunk.",
    )
    _require(
        cfg.protocol != "sentence" or run.model.truncation != "chunk",
        "eval.protocol=sentence scores from a zero state a model trained with its state carried "
        "(truncation=chunk): use eval.protocol=stateful (or auto).",
    )
    return cfg.protocol
