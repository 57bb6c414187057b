"""The typed schema of every config node, with the choices each knob allows.

This is the bottom layer: the engine, the data pipeline and the trainer read their knobs from these
dataclasses, and nothing here imports them. Hydra composes `conf/` into `ComposedRun` (registered
as `run_schema`); `rnnexp.config.resolve` turns that into a validated `RunConfig`, once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from rnnexp.config.dataset import DatasetConfig

CELLS = ("rnn", "gru", "lstm")
TRUNCATIONS = ("window", "chunk", "full")
DTYPES = ("float32", "float64")
OUTPUTS = ("softmax", "class")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
SCHEDULES = ("constant", "halve_on_rise", "newbob", "plateau", "step", "exponential", "hold_then_decay")
# auto: stateful for stream data (chunk training, PTB stream mode), sentence otherwise.
PROTOCOLS = ("auto", "stateful", "sentence")
# `python -m rnnexp.evaluate protocol=...` also offers two that adapt to the stream as they read it.
ADAPTIVE_PROTOCOLS = ("cache", "dynamic")
# The keys a resume may change (run.py refuses any other override): left out of the digest that binds a
# checkpoint to its run.
RESUME_KEYS = ("resume", "tracking_uri", "train.checkpoint_dir")
# protocol=cache's knobs; a plain mapping, since `lambda` cannot be a dataclass field
CACHE_DEFAULTS: dict[str, Any] = {"size": 500, "theta": 0.3, "lambda": 0.1}


@dataclass
class ModelConfig:
    """The network. The defaults are the tutorial's tanh RNN: no biases, no embedding layer."""

    cell: str = "rnn"  # rnn (the tutorial's) | gru | lstm
    hidden_dim: int = MISSING
    bptt_truncate: int = MISSING
    truncation: str = MISSING  # window (the tutorial's), chunk or full
    dtype: str = "float32"
    sparse_u: bool = True  # update only the embedding columns a batch used (exact for sgd)
    layers: int = 1  # gated cells: stacked layers
    embedding_dim: int | None = None  # gated cells: null means hidden_dim
    forget_bias: float = 1.0  # lstm: initial forget-gate bias
    dropout: float = 0.0  # gated cells: on embeddings, between layers and before the softmax (Zaremba)
    tie_weights: bool = False  # gated cells: the output matrix is the embedding (needs embedding_dim = hidden_dim)
    output: str = "softmax"  # softmax | class (Mikolov's class-based softmax)
    classes: int | None = None  # output=class: frequency classes, null means round(sqrt(V))
    output_bias: bool = False  # a bias on the output logits, as word_language_model's decoder has
    # null: each cell's own initialisation; r: every parameter, biases included, uniform in ±r
    # (Zaremba et al.'s code), so forget_bias is then unused
    init_range: float | None = None


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
    # From this epoch on (0: from the first update), validation, the best checkpoint and the test
    # score use the running mean of the parameters after every update (Polyak averaging, the "A"
    # of Merity et al.'s NT-ASGD); training itself goes on from the current parameters. null: off.
    average_from_epoch: int | None = None


@dataclass
class ScheduleConfig:
    """Which schedule, and its knobs (each schedule reads only its own)."""

    name: str = "constant"
    factor: float = 0.5  # halve_on_rise, newbob, plateau: multiply the rate by this at each trigger
    evaluate_loss_after: int = 1  # halve_on_rise: epochs between loss checks (the tutorial's knob)
    monitor: str = "train"  # which loss the history holds: train (the tutorial) or valid
    min_improvement: float = 1.003  # newbob: start decaying once loss_prev / loss_new < this
    step_epochs: int = 10  # step: decay every this many epochs
    gamma: float = 0.5  # step, exponential, hold_then_decay: decay factor per step / per epoch
    hold_epochs: int = 4  # hold_then_decay: epochs at the full rate before decaying (Zaremba et al.)


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    reduction: str = "mean"  # mean: loss per token; sum: per batch, as the tutorial's sgd_step
    patience: int | None = None  # stop after this many evaluations without a better validation loss
    log_every: int = 20  # steps between logged training metrics
    flush_every_s: float = 15.0  # seconds between metric uploads to MLflow (batched: cheap)
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (0: only at epoch ends)
    checkpoint_dir: str = "checkpoints"
    samples: int = 5  # sentences generated at the end of the run
    sample_max_len: int = 30


@dataclass
class EvalConfig:
    """How held-out perplexity is measured; logged with every run as `eval.protocol`."""

    protocol: str = "auto"  # auto | stateful (one stream, state carried) | sentence (each from a zero state)
    batch_size: int = 256  # sentences scored at once (sentence protocol)
    segment_length: int = 4096  # stateful: tokens scored per pass, the state carried between passes


@dataclass
class KneserNeyConfig:
    """The n-gram baseline logged beside word-level runs on real data (`kn<order>_val_ppl`, ...)."""

    enabled: bool | None = None  # null: on for word-level real data (ptb, reddit, text at word level)
    orders: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    modified: bool = True  # Chen & Goodman's three discounts per order; false: one discount per order


@dataclass
class DiagnosticsConfig:
    """The `diagnostics` node: on by default, cheap enough to leave on."""

    enabled: bool = True
    max_depth: int = 20  # K: the gradient norm is logged for k = 0..K steps back
    batch_size: int = 32  # held-out sentences the diagnostics are measured on
    # Least time between redraws of gradient_decay.png (always redrawn after the last evaluation);
    # 0: at every evaluation, null: never.
    figure_interval_s: float | None = 60.0


@dataclass
class RunConfig:
    """A run's whole config, each knob once: what is validated, logged, checkpointed and saved."""

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
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: KneserNeyConfig = field(default_factory=KneserNeyConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)


# Command-line shortcuts: `hidden_dim=50,100 -m` sweeps `model.hidden_dim`. Each exists only while
# Hydra composes; `resolve` drops it, so a run logs and saves every knob under its one real name.
ALIASES = {
    "hidden_dim": "model.hidden_dim",
    "bptt_truncate": "model.bptt_truncate",
    "truncation": "model.truncation",
    "vocab_size": "dataset.vocab_size",
    "lr": "optim.lr",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
}


@dataclass
class ComposedRun(RunConfig):
    """What Hydra composes: the run config plus the shortcuts the groups interpolate."""

    hidden_dim: int = MISSING
    bptt_truncate: int = MISSING
    truncation: str = MISSING
    vocab_size: int = MISSING
    lr: float = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING


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
class CacheSettings:
    """protocol=cache, checked (Grave et al. 2017): the last `size` (state, next word) pairs, their
    softmax's sharpness `theta`, mixed with the model's distribution at weight `lam`."""

    size: int
    theta: float
    lam: float


@dataclass
class DynamicConfig:
    """protocol=dynamic (Krause et al. 2018, SGD): score a segment, then take a gradient step on its mean loss."""

    lr: float = 1.0
    segment_length: int = 20
    decay: float = 0.0  # each step also moves the weights this fraction of the way back to the trained ones


@dataclass
class EvaluateConfig:
    """`python -m rnnexp.evaluate run_id=... split=test` (and `dataset=...` to score other data)."""

    run_id: str = MISSING
    split: str | None = None  # null: test; for protocol=cache or dynamic, valid and then test
    checkpoint: str = "best"
    checkpoint_dir: str = "checkpoints"
    protocol: str | None = None  # null: the run's; or stateful, sentence, cache, dynamic
    tracking_uri: str | None = None
    dataset: DatasetConfig | None = None  # null: the dataset the run trained on
    vocab_size: int = 100_000  # another dataset's words kept before mapping to the run's vocabulary
    cache: dict[str, Any] = field(default_factory=lambda: dict(CACHE_DEFAULTS))  # protocol=cache: size, theta, lambda
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)  # protocol=dynamic


@dataclass
class GradcheckConfig:
    """`python -m rnnexp.gradcheck model=lstm truncation=chunk`: a tiny model, central differences."""

    vocab_size: int = 12
    hidden_dim: int = 5
    bptt_truncate: int = 3
    truncation: str = "window"
    seq_len: int = 9
    batch: int = 2
    seed: int = 0
    eps: float = 1e-5
    tolerance: float = 1e-6
    model: ModelConfig = field(default_factory=ModelConfig)  # composed from conf/model/, always run in float64


@dataclass
class BaselineConfig:
    """`python -m rnnexp.baseline dataset=ptb`: Kneser–Ney perplexities of orders 1–5."""

    orders: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    modified: bool = True
    protocol: str = "stateful"  # stateful (one stream) or sentence (each line on its own)
    seed: int = 0
    vocab_size: int = 10_000  # what the dataset group interpolates
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


RUNS_ACTIONS = ("list", "mark_killed", "repair_store")


@dataclass
class RunsConfig:
    """`python -m rnnexp.runs action=list|mark_killed|repair_store`: runs left RUNNING by a process that is gone."""

    action: str = "list"
    tracking_uri: str | None = None
    experiment_name: str | None = None  # null: every experiment of the store
    run_ids: list[str] = field(default_factory=list)  # mark_killed: only these (each must be stale); empty: all


@dataclass
class UiConfig:
    """`python -m rnnexp.ui`: the URL of the experiment's runs table that `make ui` prints."""

    tracking_uri: str | None = None
    experiment_name: str = "rnnexp"
    url: str = "http://127.0.0.1:5000"  # where the MLflow UI listens
