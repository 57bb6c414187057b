"""A composed config becomes a `RunConfig` here, once: Hydra's own node dropped, `auto` settled, every value checked.

Every impossible value is a UserError naming the knob and what it must be, raised before any work
starts. The checks live only here; the engine and the trainer trust what they are given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.config.dataset import DatasetConfig
from rnnexp.config.dataset import validate as validate_dataset
from rnnexp.config.schema import (
    CACHE_DEFAULTS,
    CELLS,
    DTYPES,
    OPTIMIZERS,
    OUTPUTS,
    PROTOCOLS,
    SCHEDULES,
    TRUNCATIONS,
    CacheSettings,
    DiagnosticsConfig,
    DynamicConfig,
    EvalConfig,
    KneserNeyConfig,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
)
from rnnexp.errors import UserError

HYDRA_KEYS = ("hydra",)
RATE_ON_TRIGGER = ("halve_on_rise", "newbob", "plateau")  # the schedules that read the old `schedule.factor`


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _one_of(value: str, choices: tuple[str, ...], knob: str) -> None:
    _require(value in choices, f"{knob} must be one of {', '.join(choices)}, got {value!r}.")


def resolve(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """The composed config (or a saved one, plain data) as a validated `RunConfig`."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        tree = upgrade_saved({key: value for key, value in cast(dict, plain).items() if key not in HYDRA_KEYS})
        run = cast(RunConfig, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), tree)))
    except OmegaConfBaseException as err:
        raise UserError(f"bad config: {str(err).splitlines()[0]}.") from None
    validate(run)
    return run


def upgrade_saved(tree: dict[str, Any]) -> dict[str, Any]:
    """A config saved before a knob's rename, with today's names, so that older runs still load and resume.

    `schedule.factor` became `schedule.gamma` (the schedules that read it decayed by it); `dataset.segment_length`
    became `dataset.stream_sequence_length`. A config with neither comes back unchanged.
    """
    schedule, dataset = dict(tree.get("schedule") or {}), dict(tree.get("dataset") or {})
    if "factor" not in schedule and "segment_length" not in dataset:
        return tree
    if "factor" in schedule:
        factor = schedule.pop("factor")
        if schedule.get("name") in RATE_ON_TRIGGER:
            schedule["gamma"] = factor
    if "segment_length" in dataset:
        dataset["stream_sequence_length"] = dataset.pop("segment_length")
    return {**tree, "schedule": schedule, "dataset": dataset}


def as_tree(run: RunConfig) -> dict[str, Any]:
    """The config as plain nested data: what a checkpoint and `config.yaml` keep."""
    return cast(dict, OmegaConf.to_container(OmegaConf.structured(run)))


def validate(run: RunConfig) -> None:
    """Check every knob, and settle `eval.protocol=auto` for this dataset and truncation."""
    # a run goes back at least one step; the engine alone also takes window depth 0 (no recurrent gradient)
    _require(run.model.bptt_truncate >= 1, f"model.bptt_truncate must be >= 1, got {run.model.bptt_truncate}.")
    validate_model(run.model)
    optim, train = run.optim, run.train
    _one_of(optim.name, OPTIMIZERS, "optim.name")
    _require(math.isfinite(optim.lr) and optim.lr > 0, f"optim.lr must be a finite number > 0, got {optim.lr}.")
    validate_ranges(run)
    _require(
        optim.clip_norm is None or optim.clip_norm > 0, f"optim.clip_norm must be > 0 or null, got {optim.clip_norm}."
    )
    _require(
        optim.average_from_epoch is None or optim.average_from_epoch >= 0,
        f"optim.average_from_epoch must be >= 0 or null, got {optim.average_from_epoch}.",
    )
    _require(train.epochs >= 1, f"train.epochs must be >= 1, got {train.epochs}.")
    _require(train.batch_size >= 1, f"train.batch_size must be >= 1, got {train.batch_size}.")
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


def validate_model(model: ModelConfig, vocab_size: int | None = None) -> None:
    """Every check of a model's config (and of the vocabulary size, when known): `engine.build_model` runs it too."""
    _one_of(model.cell, tuple(CELLS), "model.cell")
    _one_of(model.truncation, TRUNCATIONS, "model.truncation")
    _one_of(model.dtype, DTYPES, "model.dtype")
    _one_of(model.output, OUTPUTS, "model.output")
    _require(model.hidden_dim >= 1, f"model.hidden_dim must be >= 1, got {model.hidden_dim}.")
    _require(
        model.bptt_truncate >= (1 if model.truncation == "chunk" else 0),
        f"model.bptt_truncate must be >= 0 (>= 1 in chunk mode), got {model.bptt_truncate}.",
    )
    _require(vocab_size is None or vocab_size >= 2, f"vocab_size must be >= 2, got {vocab_size}.")
    _require(model.layers >= 1, f"model.layers must be >= 1, got {model.layers}.")
    _require(
        model.embedding_dim is None or model.embedding_dim >= 1,
        f"model.embedding_dim must be >= 1 or null, got {model.embedding_dim}.",
    )
    _require(0.0 <= model.dropout < 1.0, f"model.dropout must lie in [0, 1), got {model.dropout}.")
    _require(model.classes is None or model.classes >= 1, f"model.classes must be >= 1 or null, got {model.classes}.")
    _require(
        model.init_range is None or 0 < model.init_range < float("inf"),
        f"model.init_range must be a finite number > 0 or null, got {model.init_range}.",
    )
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
    _require(0 < cfg.gamma <= 1, f"schedule.gamma must lie in (0, 1], got {cfg.gamma}.")
    _require(
        cfg.evaluate_loss_after >= 1 and cfg.step_epochs >= 1,
        "schedule evaluate_loss_after and step_epochs must be >= 1.",
    )
    _require(cfg.monitor in ("train", "valid"), f"schedule monitor must be 'train' or 'valid', got {cfg.monitor!r}.")
    _require(cfg.hold_epochs >= 0, f"schedule.hold_epochs must be >= 0, got {cfg.hold_epochs}.")


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
        "use eval.protocol=sentence (or auto), or train with model.truncation=chunk.",
    )
    _require(
        cfg.protocol != "sentence" or run.model.truncation != "chunk",
        "eval.protocol=sentence scores from a zero state a model trained with its state carried "
        "(model.truncation=chunk): use eval.protocol=stateful (or auto).",
    )
    return cfg.protocol


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cache_settings(knobs: Mapping[str, Any]) -> CacheSettings:
    """`cache.size`, `cache.theta` and `cache.lambda` of `python -m rnnexp.evaluate protocol=cache`, checked."""
    unknown = sorted(set(knobs) - set(CACHE_DEFAULTS))
    _require(not unknown, f"unknown cache knob(s) {', '.join(unknown)}: the cache takes size, theta and lambda.")
    size, theta, lam = (knobs.get(name, default) for name, default in CACHE_DEFAULTS.items())
    _require(
        isinstance(size, int) and not isinstance(size, bool) and size >= 1,
        f"cache.size must be an integer >= 1 (positions remembered), got {size!r}.",
    )
    _require(_is_number(theta) and theta > 0, f"cache.theta must be a finite number > 0, got {theta!r}.")
    _require(_is_number(lam) and 0 <= lam <= 1, f"cache.lambda must lie in [0, 1], got {lam!r}.")
    return CacheSettings(size, float(theta), float(lam))


def validate_dynamic(cfg: DynamicConfig) -> None:
    """The knobs of `python -m rnnexp.evaluate protocol=dynamic`."""
    _require(_is_number(cfg.lr) and cfg.lr >= 0, f"dynamic.lr must be a finite number >= 0, got {cfg.lr}.")
    _require(cfg.segment_length >= 1, f"dynamic.segment_length must be >= 1, got {cfg.segment_length}.")
    _require(0 <= cfg.decay < 1, f"dynamic.decay must lie in [0, 1), got {cfg.decay}.")


def validate_ranges(run: RunConfig) -> None:
    """The ranges the maths needs: a seed NumPy takes, decay rates below 1 (at 1, Adam's bias correction
    divides by zero and momentum never forgets), a positive eps, and a model that fits in memory; and an
    experiment name MLflow accepts."""
    optim = run.optim
    _require(
        bool(run.experiment_name.strip()),
        f"experiment_name must name an MLflow experiment, got {run.experiment_name!r}: drop the override "
        "(the default is rnnexp) or give a name.",
    )
    validate_seed(run.seed)
    for knob in ("momentum", "rho", "beta1", "beta2"):
        value = getattr(optim, knob)
        _require(0 <= value < 1, f"optim.{knob} must lie in [0, 1), got {value}.")
    _require(math.isfinite(optim.eps) and optim.eps > 0, f"optim.eps must be a finite number > 0, got {optim.eps}.")
    _require(
        optim.clip_norm is None or math.isfinite(optim.clip_norm),
        f"optim.clip_norm must be finite or null, got {optim.clip_norm}.",
    )
    _require(run.train.sample_max_len >= 1, f"train.sample_max_len must be >= 1, got {run.train.sample_max_len}.")
    check_memory(run, vocab_size=None)


# Copies of the parameters besides themselves: their gradients and the best ones so far, plus the
# optimiser's state (Adam keeps two moments, the others one velocity or running mean, SGD none).
OPTIMIZER_COPIES = {"sgd": 0, "momentum": 1, "adagrad": 1, "rmsprop": 1, "adam": 2}


def memory_estimate(run: RunConfig, vocab_size: int) -> int:
    """Bytes a run needs at least: parameters, gradients, best copy, optimiser state, one batch's activations."""
    model = run.model
    hidden, gates = model.hidden_dim, CELLS[model.cell]
    if model.cell == "rnn":  # the tutorial's U (H×V), W (H×H) and V (V×H), no biases
        params = 2 * hidden * vocab_size + hidden * hidden
    else:  # an embedding, the gates of each layer over its input and state (with biases), an output layer
        embedding = model.embedding_dim or hidden
        recurrent = gates * hidden * (embedding + hidden + 1) + (model.layers - 1) * gates * hidden * (2 * hidden + 1)
        params = embedding * vocab_size + recurrent + (0 if model.tie_weights else (hidden + 1) * vocab_size)
    copies = 3 + OPTIMIZER_COPIES[run.optim.name] + (run.optim.average_from_epoch is not None)
    tokens = run.train.batch_size * model.bptt_truncate
    activations = tokens * (vocab_size + 2 * gates * hidden * model.layers)
    return (params * copies + activations) * (4 if model.dtype == "float32" else 8)


def check_memory(run: RunConfig, vocab_size: int | None) -> None:
    """Refuse at once a model that cannot fit in this machine's memory, rather than after minutes of MemoryError.

    Before the data loads (`vocab_size` None) the estimate counts the network alone, so it never refuses
    what fits; the trainer checks again with the real vocabulary."""
    import psutil  # here: importing it costs the entry points' --help time for a check made once

    needed, total = memory_estimate(run, vocab_size or 0), psutil.virtual_memory().total
    words = f"{vocab_size} words" if vocab_size else "before its vocabulary"
    _require(
        needed <= total,
        f"this model needs at least {needed / 2**30:,.1f} GiB (model.hidden_dim={run.model.hidden_dim}, "
        f"{run.model.layers} layer(s), {words}, {run.model.cell}, {run.model.dtype}), more than this "
        f"machine's {total / 2**30:,.1f} GiB of memory: choose a smaller model.hidden_dim, dataset.vocab_size or "
        "train.batch_size.",
    )


def validate_generate(num: int, max_len: int, temperature: float, top_k: int | None, seed: int) -> None:
    """`python -m rnnexp.generate`'s knobs, checked before a model loads."""
    _require(num >= 1, f"num must be >= 1 (sentences to print), got {num}.")
    _require(max_len >= 1, f"max_len must be >= 1 (words per sentence at most), got {max_len}.")
    _require(
        math.isfinite(temperature) and temperature > 0, f"temperature must be a finite number > 0, got {temperature}."
    )
    _require(top_k is None or top_k >= 1, f"top_k must be >= 1 (the words kept) or null (all), got {top_k}.")
    validate_seed(seed)


def validate_seed(seed: int) -> None:
    _require(seed >= 0, f"seed must be >= 0 (NumPy seeds are non-negative), got {seed}.")
