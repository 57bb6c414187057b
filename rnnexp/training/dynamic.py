"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals, ICML 2018), in its SGD form.

The split is read as the stateful protocol reads it, one stream with the state carried, in segments
of `segment_length` tokens. Each segment is scored with the current weights, and only then does
the model take a gradient step on that segment's mean loss (BPTT within the segment, from the
carried state):

    θ ← θ − lr ∇L_k(θ) + decay (θ₀ − θ)        θ₀: the trained weights

so every token is scored by weights that have seen only the tokens before its segment. The steps
change a copy of the model, built without dropout; the trained model's arrays are never written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rnnexp.config.schema import DynamicConfig, ModelConfig
from rnnexp.engine import build_model, load_params
from rnnexp.engine.grads import ColumnGrad
from rnnexp.training.cache import StreamReading, stream_targets


class DynamicEvaluation:
    """A copy of a trained model that adapts to the segments it reads."""

    def __init__(self, trained: Any, model_cfg: ModelConfig, lr: float, decay: float = 0.0):
        # dropout stays off at evaluation, in the gradient steps as in the scores
        cfg = dataclasses.replace(model_cfg, dropout=0.0)
        self.model = build_model(cfg, trained.vocab_size, seed=0, word_class=trained.buffers.get("word_class"))
        load_params(self.model, trained.params)
        self.lr, self.decay = self.model.dtype.type(lr), self.model.dtype.type(decay)
        # decay θ₀, added at every step: the pull toward the trained weights needs no other copy of them
        self.pull = {name: self.decay * value for name, value in trained.params.items()} if decay else {}

    def read(
        self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None, keep_states: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Score one segment with the current weights, then step on it: (nll, top states or None, carried state)."""
        states = self.model.hidden_states(x[None], h0=state)[0] if keep_states else None
        nll, after = self.model.token_nll(x[None], y[None], h0=state)
        self.step(x, y, state)
        return nll[0], states, after

    def step(self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None) -> None:
        """θ ← θ − lr ∇L(θ) + decay (θ₀ − θ) for the segment's mean loss L, in place."""
        grads = self.model.backprop(x[None], y[None], h0=state, sparse_u=True).grads
        for name, value in self.model.params.items():
            if self.decay:  # (1 − decay) θ + decay θ₀
                value *= 1 - self.decay
                value += self.pull[name]
            grad = grads[name]
            if isinstance(grad, ColumnGrad):  # the embedding: only the columns of the segment's words move
                value[:, grad.cols] -= self.lr * grad.rows.T
            else:
                grad *= self.lr
                value -= grad


def dynamic_reading(
    trained: Any, model_cfg: ModelConfig, stream: np.ndarray, cfg: DynamicConfig, keep_states: bool = False
) -> StreamReading:
    """Every target's NLL under dynamic evaluation, in the stream's order (and the states, for the cache)."""
    x, y = stream_targets(stream)
    evaluation = DynamicEvaluation(trained, model_cfg, cfg.lr, cfg.decay)
    scores, states, state = [], [], None
    for start in range(0, len(x), cfg.segment_length):
        nll, top, state = evaluation.read(
            x[start : start + cfg.segment_length], y[start : start + cfg.segment_length], state, keep_states
        )
        scores.append(nll)
        if top is not None:
            states.append(top)
    return StreamReading(np.concatenate(scores), y, np.concatenate(states) if keep_states else None)
