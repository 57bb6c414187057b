"""Central-difference gradient check of the engine, for every parameter and truncation mode.

A truncated gradient is not the gradient of the loss itself, so each mode is checked against the
objective it really differentiates, written plainly as a forward pass:
- full: the loss;
- window: output t sees only steps t-k..t; the state before them is a constant of the base model;
- chunk: each chunk starts from the carried state of the base model, a constant.
For the gated cells the forward pass is the gate-by-gate reference of `rnnexp.engine.reference.gated`
(or, for a cell without one, the `forward` its caller writes plainly), and the state is the whole
carried state (every layer's h and c); the class output (`model.output=class`) scores the top
layer's h through its normalised log-probabilities. `python -m rnnexp.check_gradients` runs
it from the command line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnexp.engine.gated import GatedLM
from rnnexp.engine.model import LanguageModel
from rnnexp.engine.outputs import ClassOutput
from rnnexp.engine.reference.gated import GateByGateLM
from rnnexp.errors import UserError


def _nll(params: dict, s: np.ndarray, y: int) -> float:
    logits = params["V"] @ s
    top = logits.max()
    return float(top + np.log(np.exp(logits - top).sum()) - logits[y])


def _run(params: dict, h: np.ndarray, words) -> np.ndarray:
    for w in words:
        h = np.tanh(params["U"][:, w] + params["W"] @ h)
    return h


# params -> (run(state, words) -> state, nll(state, target)): a model's function written plainly
Forward = Callable[[dict], tuple[Callable, Callable]]


def _class_nll(model: LanguageModel, params: dict) -> Callable[[np.ndarray, int], float] | None:
    """-log P(target | top h) through the model's class output with `params`; None for the full softmax."""
    if not isinstance(model.output, ClassOutput):
        return None
    weights = {**params, "V": params["U"].T} if getattr(model, "tie_weights", False) else params
    layer = ClassOutput(weights, "V", model.output.word_class)
    return lambda top, target: float(-layer.logits(top)[target])  # normalised log-probabilities


def _forward(model: LanguageModel, params: dict) -> tuple[Callable, Callable]:
    """(run(state, words) -> state, nll(state, target)) of the model's function with `params`."""
    class_nll = _class_nll(model, params)
    if isinstance(model, GatedLM):
        reference = GateByGateLM.like(model, params)
        if class_nll is None:
            return reference.run, reference.nll
        return reference.run, lambda state, y: class_nll(reference.split_state(state)[-1][0], y)
    return (lambda h, words: _run(params, h, words)), class_nll or (lambda s, y: _nll(params, s, y))


def truncated_objective(
    model: LanguageModel, params: dict, x: np.ndarray, y: np.ndarray, forward: Forward | None = None
) -> float:
    """Mean NLL of one sequence as the model's truncation mode defines it (see module doc); `forward`
    writes the model's function plainly where the engine has no reference of it."""
    k, T = model.bptt_truncate, len(x)
    run, nll = forward(params) if forward is not None else _forward(model, params)
    run_base, _ = forward(model.params) if forward is not None else _forward(model, model.params)
    zero = np.zeros(model.state_size)
    if model.truncation == "full":
        states = []
        h = zero
        for w in x:
            h = run(h, [w])
            states.append(h)
        return sum(nll(s, t) for s, t in zip(states, y)) / T
    if model.truncation == "chunk":
        total, h_base = 0.0, zero
        for c0 in range(0, T, k):
            h = h_base
            for w, target in zip(x[c0 : c0 + k], y[c0 : c0 + k]):
                h = run(h, [w])
                total += nll(h, target)
            h_base = run_base(h_base, x[c0 : c0 + k])
        return total / T
    base_states = [zero]
    for w in x:
        base_states.append(run_base(base_states[-1], [w]))
    total = 0.0
    for t in range(T):
        first = max(0, t - k)
        h = run(base_states[first], x[first : t + 1])
        total += nll(h, y[t])
    return total / T


def engine_gradients(model: LanguageModel, x: np.ndarray, y: np.ndarray) -> dict:
    """The engine's gradient of the same objective; chunk mode feeds chunks with the carried state."""
    if model.truncation != "chunk":
        return model.loss_and_grads(x, y)[1]
    k, h = model.bptt_truncate, None
    total = {name: np.zeros_like(p) for name, p in model.params.items()}
    for c0 in range(0, len(x), k):
        step = model.backprop(x[c0 : c0 + k], y[c0 : c0 + k], h0=h, reduction="sum")
        for name in total:
            grad = step.grads[name]
            assert isinstance(grad, np.ndarray)  # dense: no sparse_u
            total[name] += grad / len(x)
        h = step.h_last
    return total


def relative_errors(model: LanguageModel, x, y, eps: float = 1e-5, forward: Forward | None = None) -> dict[str, float]:
    """max |analytic - numeric| / max(|analytic|, |numeric|) over the entries of each parameter; `forward`
    as in `truncated_objective`."""
    if model.dtype != np.float64:
        raise UserError("the gradient check needs dtype=float64: float32 cannot resolve central differences.")
    if getattr(model, "dropout", 0.0):
        raise UserError("the gradient check needs model.dropout=0: central differences cannot follow random masks.")
    x, y = np.asarray(x), np.asarray(y)
    analytic = engine_gradients(model, x, y)
    errors = {}
    for name, p in model.params.items():
        numeric = np.zeros(p.shape)
        trial = {n: q.copy() for n, q in model.params.items()}
        for idx in np.ndindex(p.shape):
            old = trial[name][idx]
            trial[name][idx] = old + eps
            up = truncated_objective(model, trial, x, y, forward)
            trial[name][idx] = old - eps
            down = truncated_objective(model, trial, x, y, forward)
            trial[name][idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        scale = max(np.abs(analytic[name]).max(), np.abs(numeric).max(), 1e-12)
        errors[name] = float(np.abs(analytic[name] - numeric).max() / scale)
    return errors
