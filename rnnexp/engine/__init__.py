"""The engine: models, their exact gradients, optimisers and schedules, in NumPy. Imports only `rnnexp.config`.

Every model offers the same public API, which the trainer, the evaluation protocols and the
diagnostics use and nothing else:

- `params`: name -> array, updated in place by the optimisers; `V`, `H`, `dtype`, `truncation`,
  `bptt_truncate`;
- `backprop(x, y, mask, h0, reduction, sparse_u) -> Step`: loss, gradients, the carried state;
- `token_nll(x, y, mask, h0) -> (nll, h_last)`: per-token scores, for any protocol;
- `hidden_states(x, h0)` and `gradient_decay(x, y, mask, max_depth)`: for the diagnostics;
- `sample(...)` and `predict(x)`.
"""

from __future__ import annotations

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.rnn import RNNLM, Step


def build_model(cfg: ModelConfig, vocab_size: int, seed: int) -> RNNLM:
    """The model `cfg` describes over `vocab_size` words, initialised from `seed`."""
    return RNNLM(vocab_size, cfg.hidden_dim, cfg.bptt_truncate, cfg.truncation, cfg.dtype, seed)


__all__ = ["RNNLM", "Step", "build_model"]
