"""The parts of WildML's notebook that `rnnexp.engine.reference.tutorial` does not hold, as written there:
`calculate_loss`, `train_with_sgd`, and the weights `np.random.seed(10); RNNNumpy(V, H)` draws."""

from __future__ import annotations

import numpy as np

from experiments.tutorial import published
from rnnexp.engine.reference.tutorial import WildMLRNN
from rnnexp.engine.rnn import RNNLM


def tutorial_model(vocab_size: int, hidden_dim: int, bptt_truncate: int = 4) -> WildMLRNN:
    """RNNNumpy after np.random.seed(10): U, V, W drawn in that order."""
    return WildMLRNN(vocab_size, hidden_dim, bptt_truncate, seed=published.UNTRAINED_SEED)


def with_tutorial_weights(model: RNNLM) -> RNNLM:
    """The engine model given the tutorial's initial weights."""
    reference = tutorial_model(model.vocab_size, model.H, model.bptt_truncate)
    for name in ("U", "W", "V"):
        model.params[name][...] = getattr(reference, name)
    return model


def as_wildml(model: RNNLM) -> WildMLRNN:
    """WildML's RNNNumpy holding the engine model's weights (in float64)."""
    reference = WildMLRNN(model.vocab_size, model.H, model.bptt_truncate)
    reference.U, reference.W, reference.V = (np.array(model.params[n], dtype=np.float64) for n in ("U", "W", "V"))
    return reference


def calculate_loss(model: WildMLRNN, sentences: list[np.ndarray]) -> float:
    """WildML's calculate_loss: the summed negative log-likelihood over the number of words."""
    total, words = 0.0, 0
    for s in sentences:
        o, _ = model.forward_propagation(s[:-1])
        total -= float(np.log(o[np.arange(len(s) - 1), s[1:]]).sum())
        words += len(s) - 1
    return total / words


def train_with_sgd(
    model: WildMLRNN, sentences: list[np.ndarray], lr: float, epochs: int, evaluate_loss_after: int
) -> list[float]:
    """WildML's train_with_sgd: the loss at each check, lr halved when it rose; sentences in file order.

    It checks once more after the last epoch, as the runner does, so the two curves line up.
    """
    losses: list[float] = []
    for epoch in range(epochs + 1):
        if epoch % evaluate_loss_after == 0:
            losses.append(calculate_loss(model, sentences))
            if len(losses) > 1 and losses[-1] > losses[-2]:
                lr *= 0.5
        if epoch < epochs:
            for s in sentences:
                model.sgd_step(s[:-1], s[1:], lr)
    return losses
