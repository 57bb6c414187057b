"""The engine: models, their exact gradients, optimisers and schedules, in NumPy. Imports only `rnnexp.config`.

Every model offers the same public API, which the trainer, the evaluation protocols and the
diagnostics use and nothing else:

- `params`: name -> array, updated in place by the optimisers; `V`, `H`, `dtype`, `truncation`,
  `bptt_truncate`;
- `backprop(x, y, mask, h0, reduction, sparse_u) -> Step`: loss, gradients, the carried state;
- `token_nll(x, y, mask, h0) -> (nll, h_last)`: per-token scores, for any protocol;
- `hidden_states(x, h0)` and `gradient_decay(x, y, mask, max_depth)`: for the diagnostics;
- `sample(...)` and `predict(x)`;
- `buffers`: arrays that are not trained but that a checkpoint must keep (output=class: `word_class`).

Output layers (`output.SoftmaxOutput`, `class_output.ClassOutput`, both built by
`class_output.make_output`) share one contract, and a cell uses nothing else: `nll_grads(S, y,
weights, need_grads) -> (nll, dS, grads)` with `grads` a dict of the layer's parameter gradients
(softmax: {'V'}; class: {'V', 'Vc'}), `logits(s)`, `buffers`. `SoftmaxOutput.__call__` still
returns (nll, dS, dV), for code written against it before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.gated import GatedLM
from rnnexp.engine.rnn import RNNLM, Step


def build_model(
    cfg: ModelConfig, vocab_size: int, seed: int, counts: np.ndarray | None = None, word_class: np.ndarray | None = None
) -> RNNLM | GatedLM:
    """The model `cfg` describes over `vocab_size` words, initialised from `seed`.

    output=class forms its classes from the training split's word `counts`, or takes a
    checkpoint's `word_class` (its `buffers`) as they were.
    """
    model = _build(cfg, vocab_size, seed, counts, word_class)
    if cfg.init_range is not None:
        uniform_init(model.params, cfg.init_range, seed)
    return model


def uniform_init(params: Mapping[str, np.ndarray], bound: float, seed: int) -> None:
    """Every parameter, biases included, uniform in ±bound (Zaremba et al.'s `params:uniform`); drawn in
    place, in the model's parameter order, so tied and output-layer views stay valid."""
    rng = np.random.default_rng(seed)
    for value in params.values():
        value[...] = rng.uniform(-bound, bound, value.shape)


def _build(
    cfg: ModelConfig, vocab_size: int, seed: int, counts: np.ndarray | None, word_class: np.ndarray | None
) -> RNNLM | GatedLM:
    if cfg.cell == "rnn":
        return RNNLM(
            vocab_size,
            cfg.hidden_dim,
            cfg.bptt_truncate,
            cfg.truncation,
            cfg.dtype,
            seed,
            output=cfg.output,
            classes=cfg.classes,
            counts=counts,
            word_class=word_class,
            output_bias=cfg.output_bias,
        )
    return GatedLM(
        vocab_size,
        cfg.hidden_dim,
        cell=cfg.cell,
        layers=cfg.layers,
        embedding_dim=cfg.embedding_dim,
        bptt_truncate=cfg.bptt_truncate,
        truncation=cfg.truncation,
        dtype=cfg.dtype,
        forget_bias=cfg.forget_bias,
        dropout=cfg.dropout,
        tie_weights=cfg.tie_weights,
        seed=seed,
        output=cfg.output,
        classes=cfg.classes,
        counts=counts,
        word_class=word_class,
        output_bias=cfg.output_bias,
    )


def load_params(model: Any, params: Mapping[str, np.ndarray]) -> None:
    """Copy saved parameters into a model's arrays in place, so the optimiser's and output layer's views stay valid."""
    for name, value in params.items():
        model.params[name][...] = value


__all__ = ["GatedLM", "RNNLM", "Step", "build_model", "load_params"]
