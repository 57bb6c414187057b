"""Central-difference gradient check of the engine, for every parameter and truncation mode.

A truncated gradient is not the gradient of the loss itself, so each mode is checked against the
objective it really differentiates, written plainly as a forward pass:
- full: the loss;
- window: output t sees only steps t-k..t; the state before them is a constant of the base model;
- chunk: each chunk starts from the carried state of the base model, a constant.
`python -m rnnexp.gradcheck` runs it from the command line.
"""

from __future__ import annotations

import numpy as np

from rnnexp.engine.rnn import RNNLM
from rnnexp.errors import UserError


def _nll(params: dict, s: np.ndarray, y: int) -> float:
    logits = params["V"] @ s
    top = logits.max()
    return float(top + np.log(np.exp(logits - top).sum()) - logits[y])


def _run(params: dict, h: np.ndarray, words) -> np.ndarray:
    for w in words:
        h = np.tanh(params["U"][:, w] + params["W"] @ h)
    return h


def truncated_objective(model: RNNLM, params: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Mean NLL of one sequence as the model's truncation mode defines it (see module doc)."""
    base, H, k, T = model.params, model.H, model.bptt_truncate, len(x)
    zero = np.zeros(H)
    if model.truncation == "full":
        states = []
        h = zero
        for w in x:
            h = _run(params, h, [w])
            states.append(h)
        return sum(_nll(params, s, t) for s, t in zip(states, y)) / T
    if model.truncation == "chunk":
        total, h_base = 0.0, zero
        for c0 in range(0, T, k):
            h = h_base
            for w, target in zip(x[c0 : c0 + k], y[c0 : c0 + k]):
                h = _run(params, h, [w])
                total += _nll(params, h, target)
            h_base = _run(base, h_base, x[c0 : c0 + k])
        return total / T
    base_states = [zero]
    for w in x:
        base_states.append(_run(base, base_states[-1], [w]))
    total = 0.0
    for t in range(T):
        first = max(0, t - k)
        h = _run(params, base_states[first], x[first : t + 1])
        total += _nll(params, h, y[t])
    return total / T


def engine_gradients(model: RNNLM, x: np.ndarray, y: np.ndarray) -> dict:
    """The engine's gradient of the same objective; chunk mode feeds chunks with the carried state."""
    if model.truncation != "chunk":
        return model.loss_and_grads(x, y)[1]
    k, h = model.bptt_truncate, None
    total = {name: np.zeros_like(p) for name, p in model.params.items()}
    for c0 in range(0, len(x), k):
        step = model.backprop(x[c0 : c0 + k], y[c0 : c0 + k], h0=h, reduction="sum")
        for name in total:
            total[name] += step.grads[name] / len(x)
        h = step.h_last
    return total


def relative_errors(model: RNNLM, x, y, eps: float = 1e-5) -> dict[str, float]:
    """max |analytic - numeric| / max(|analytic|, |numeric|) over the entries of each parameter."""
    if model.dtype != np.float64:
        raise UserError("the gradient check needs dtype=float64: float32 cannot resolve central differences.")
    x, y = np.asarray(x), np.asarray(y)
    analytic = engine_gradients(model, x, y)
    errors = {}
    for name, p in model.params.items():
        numeric = np.zeros(p.shape)
        trial = {n: q.copy() for n, q in model.params.items()}
        for idx in np.ndindex(p.shape):
            old = trial[name][idx]
            trial[name][idx] = old + eps
            up = truncated_objective(model, trial, x, y)
            trial[name][idx] = old - eps
            down = truncated_objective(model, trial, x, y)
            trial[name][idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        scale = max(np.abs(analytic[name]).max(), np.abs(numeric).max(), 1e-12)
        errors[name] = float(np.abs(analytic[name] - numeric).max() / scale)
    return errors
