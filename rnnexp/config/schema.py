"""The typed schema of every config node, with the choices each knob allows.

This is the bottom layer: the engine, the data pipeline and the trainer read their knobs from these
dataclasses, and nothing here imports them. Hydra composes `conf/` into `RunConfig` (registered
as `run_schema`); `rnnexp.config.resolve` validates it, once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from rnnexp.config.dataset import DatasetConfig

# The one list of cells: name -> blocks of hidden_dim rows in a layer's weights (the memory estimate's
# count). `rnn` is the tutorial's model (engine/rnn.py); every other name is a gated cell whose class
# `rnnexp.engine.cells.<name>.CELL` the engine loads by this name (config cannot import the engine).
CELLS = {"rnn": 1, "gru": 3, "lstm": 4}
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
    """The network, and the one place its defaults live: the tutorial's tanh RNN (no biases, no embedding
    layer) at the default experiment's size; conf/model/<cell>.yaml sets only what differs."""

    cell: str = "rnn"  # a name in CELLS: rnn (the tutorial's) | gru | lstm
    hidden_dim: int = 64
    bptt_truncate: int = 4
    truncation: str = "window"  # window (the tutorial's), chunk or full
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
    # every decaying schedule multiplies the rate by this at each decay (an epoch, a step or a loss check)
    gamma: float = 0.5
    evaluate_loss_after: int = 1  # halve_on_rise: epochs between loss checks (the tutorial's knob)
    monitor: str = "train"  # which loss the history holds: train (the tutorial) or valid
    min_improvement: float = 1.003  # newbob: start decaying once loss_prev / loss_new < this
    step_epochs: int = 10  # step: decay every this many epochs
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
class KneserNeyModels:
    """Which interpolated Kneser–Ney models: a run's baseline and `python -m rnnexp.ngram` alike."""

    orders: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    modified: bool = True  # Chen & Goodman's three discounts per order; false: one discount per order


@dataclass
class KneserNeyConfig(KneserNeyModels):
    """The n-gram baseline logged beside word-level runs on real data (`kn<order>_val_ppl`, ...)."""

    enabled: bool | None = None  # null: on for word-level real data (ptb, reddit, text at word level)


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
class OtherDatasetConfig(DatasetConfig):
    """Other data a trained run is scored on: its words are mapped onto the run's vocabulary afterwards,
    so by default it keeps them all (up to 100,000) rather than a run's default 256."""

    vocab_size: int = 100_000


@dataclass
class EvaluateConfig:
    """`python -m rnnexp.evaluate run_id=... split=test` (and `dataset=...` to score other data)."""

    run_id: str = MISSING
    split: str | None = None  # null: test; for protocol=cache or dynamic, valid and then test
    checkpoint: str = "best"
    checkpoint_dir: str = "checkpoints"
    protocol: str | None = None  # null: the run's; or stateful, sentence, cache, dynamic
    tracking_uri: str | None = None
    dataset: OtherDatasetConfig | None = None  # null: the dataset the run trained on
    cache: dict[str, Any] = field(default_factory=lambda: dict(CACHE_DEFAULTS))  # protocol=cache: size, theta, lambda
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)  # protocol=dynamic


@dataclass
class CheckGradientsConfig:
    """`python -m rnnexp.check_gradients model=lstm model.truncation=chunk`: a tiny model, central differences."""

    vocab_size: int = 12  # the random sequence's token range (there is no corpus)
    seq_len: int = 9
    batch: int = 2
    seed: int = 0
    eps: float = 1e-5
    tolerance: float = 1e-6
    # composed from conf/model/, its sizes from conf/check_gradients.yaml; always run in float64
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class NgramConfig(KneserNeyModels):
    """`python -m rnnexp.ngram dataset=ptb`: Kneser–Ney perplexities of orders 1–5."""

    protocol: str = "stateful"  # stateful (one stream) or sentence (each line on its own)
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(vocab_size=10_000))  # PTB's vocabulary


REPAIR_ACTIONS = ("list", "mark_killed", "repair_store")


@dataclass
class RepairConfig:
    """`python -m rnnexp.repair action=list|mark_killed|repair_store`: runs left RUNNING by a process that is gone."""

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
