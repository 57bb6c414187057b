"""The engine: models, their exact gradients, optimisers and schedules, in NumPy. Imports only `rnnexp.config`.

Every model offers the same public API (`model.LanguageModel`), which the trainer, the evaluation
protocols and the diagnostics use and nothing else:

- `params`: name -> array, updated in place by the optimisers; `vocab_size`, `H`, `dtype`,
  `truncation`, `bptt_truncate`, `state_size`;
- `backprop(x, y, mask, h0, reduction, sparse_u) -> Step`: loss, gradients, the carried state;
- `token_nll(x, y, mask, h0) -> (nll, h_last)`: per-token scores, for any protocol;
- `hidden_states(x, h0)` and `gradient_decay(x, y, mask, max_depth)`: for the diagnostics;
- `sample(...)` and `predict(x)`;
- `buffers`: arrays that are not trained but that a checkpoint must keep (output=class: `word_class`).

`build_model` is the one way to make a model: the tutorial's RNN (`rnn.RNNLM`) or stacked layers of
a gated cell (`gated.GatedLM` over `cells/`), with an output layer from `outputs.make_output`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rnnexp.config.resolve import validate_model
from rnnexp.config.schema import ModelConfig
from rnnexp.engine.cells import load_cell
from rnnexp.engine.gated import GatedLM
from rnnexp.engine.model import LanguageModel, Step
from rnnexp.engine.rnn import RNNLM
from rnnexp.engine.threads import default_threads


def build_model(
    cfg: ModelConfig,
    vocab_size: int,
    seed: int | None,
    counts: np.ndarray | None = None,
    word_class: np.ndarray | None = None,
    threads: int | None = None,
) -> LanguageModel:
    """The model `cfg` describes over `vocab_size` words, initialised from `seed` (None: fresh entropy).

    output=class forms its classes from the training split's word `counts`, or takes a
    checkpoint's `word_class` (its `buffers`) as they were. `threads` are the model's worker
    threads (None: `threads.default_threads()`); results repeat bitwise for a given count.
    """
    validate_model(cfg, vocab_size)
    workers = max(1, int(threads if threads is not None else default_threads()))
    model: LanguageModel
    if cfg.cell == "rnn":
        model = RNNLM(cfg, vocab_size, seed, workers, counts, word_class)
    else:
        model = GatedLM(cfg, vocab_size, seed, workers, counts, word_class, load_cell(cfg.cell))
    if cfg.init_range is not None:
        uniform_init(model.params, cfg.init_range, seed)
    return model


def uniform_init(params: Mapping[str, np.ndarray], bound: float, seed: int | None) -> None:
    """Every parameter, biases included, uniform in ±bound (Zaremba et al.'s `params:uniform`); drawn in
    place, in the model's parameter order, so tied and output-layer views stay valid."""
    rng = np.random.default_rng(seed)
    for value in params.values():
        value[...] = rng.uniform(-bound, bound, value.shape)


def load_params(model: LanguageModel, params: Mapping[str, np.ndarray]) -> None:
    """Copy saved parameters into a model's arrays in place, so the optimiser's and output layer's views stay valid."""
    for name, value in params.items():
        model.params[name][...] = value


__all__ = ["GatedLM", "LanguageModel", "RNNLM", "Step", "build_model", "load_params"]
