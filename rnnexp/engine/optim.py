"""Optimisers and gradient clipping, updating parameters in place.

U's gradient usually arrives as a `ColumnGrad` (only the words of the batch). SGD, Adagrad and
RMSProp then touch only those columns, which is exact because their update is zero wherever the
gradient is zero; momentum and Adam decay their buffers everywhere, as their definitions require.
U and its state are handled through the (V, H) transpose, where a word's column is a contiguous row.

Every optimiser can also keep the running mean of the parameters after each update (Polyak
averaging); the training loop says from when, and evaluates the mean instead of the iterate.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from rnnexp.config.schema import OptimConfig
from rnnexp.engine.grads import ColumnGrad, squared_norm
from rnnexp.engine.threads import blas_single_threaded
from rnnexp.errors import UserError


def _target(name: str, param: np.ndarray, grad) -> tuple[np.ndarray, object, np.ndarray]:
    """(array to update, row index, gradient rows) in the layout the update works in."""
    if isinstance(grad, ColumnGrad):
        return param.T, grad.cols, grad.rows
    if name == "U":
        return param.T, slice(None), grad.T
    return param, slice(None), grad


def _axpy(y: np.ndarray, x: np.ndarray, a: float) -> None:
    """y += a·x in place: one BLAS pass without a temporary where both arrays are contiguous alike."""
    if y.flags.c_contiguous and x.flags.c_contiguous and y.dtype == x.dtype:
        get_blas_funcs("axpy", dtype=y.dtype)(x.reshape(-1), y.reshape(-1), a=a)
    else:
        y += a * x


def grad_sum_sq(grads: dict) -> float:
    return sum(squared_norm(g) for g in grads.values())


def clip_global_norm(grads: dict, max_norm: float | None) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`; return the norm before."""
    norm = float(np.sqrt(grad_sum_sq(grads)))
    if max_norm and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            (g.rows if isinstance(g, ColumnGrad) else g)[...] *= scale
    return norm


class Optimizer:
    """Base: keeps per-parameter state arrays, named '<slot>.<param>' for checkpoints."""

    slots: tuple[str, ...] = ()

    def __init__(self, cfg: OptimConfig):
        self.cfg = cfg
        self.state: dict[str, np.ndarray] = {}
        self.t = 0

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        key = f"{slot}.{name}"
        if key not in self.state:
            self.state[key] = np.zeros_like(like)
        return self.state[key]

    @blas_single_threaded  # a 2-thread axpy leaves OpenBLAS's threads spinning into the next backprop
    def step(self, params: dict, grads: dict, lr: float) -> None:
        self.t += 1
        for name, grad in grads.items():
            p, idx, g = _target(name, params[name], grad)
            self.update(name, p, idx, g, lr)

    def update(self, name, p, idx, g, lr) -> None:
        raise NotImplementedError

    def accumulate_average(self, params: dict) -> None:
        """Add the parameters after this update to their running mean: mean += (p - mean) / n."""
        n = int(self.state.get("average_count", 0)) + 1
        for name, value in params.items():
            mean = self._slot("average", name, value)
            mean += (value - mean) / n
        self.state["average_count"] = np.array(n)

    def average(self) -> dict[str, np.ndarray] | None:
        """The running mean of the parameters, by name; None before the first averaged update."""
        if "average_count" not in self.state:
            return None
        prefix = "average."
        return {key[len(prefix) :]: value for key, value in self.state.items() if key.startswith(prefix)}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t), **self.state}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])
        self.state = {k: np.array(v) for k, v in state.items() if k != "t"}


class SGD(Optimizer):
    def update(self, name, p, idx, g, lr):
        if isinstance(idx, slice):
            _axpy(p, g, -lr)
        else:
            p[idx] -= lr * g


class Momentum(Optimizer):
    """Heavy-ball momentum: v <- mu v + g; p <- p - lr v."""

    def update(self, name, p, idx, g, lr):
        v = self._slot("velocity", name, p)
        v *= self.cfg.momentum
        v[idx] += g
        p -= lr * v


class Adagrad(Optimizer):
    def update(self, name, p, idx, g, lr):
        acc = self._slot("sum_sq", name, p)
        acc[idx] += g * g
        p[idx] -= lr * g / (np.sqrt(acc[idx]) + self.cfg.eps)


class RMSProp(Optimizer):
    def update(self, name, p, idx, g, lr):
        rho = self.cfg.rho
        acc = self._slot("mean_sq", name, p)
        acc *= rho
        acc[idx] += (1 - rho) * g * g
        p[idx] -= lr * g / (np.sqrt(acc[idx]) + self.cfg.eps)


class Adam(Optimizer):
    def update(self, name, p, idx, g, lr):
        b1, b2 = self.cfg.beta1, self.cfg.beta2
        m, v = self._slot("m", name, p), self._slot("v", name, p)
        m *= b1
        m[idx] += (1 - b1) * g
        v *= b2
        v[idx] += (1 - b2) * g * g
        m_hat_scale = 1.0 / (1 - b1**self.t)
        v_hat_scale = 1.0 / (1 - b2**self.t)
        p -= lr * (m * m_hat_scale) / (np.sqrt(v * v_hat_scale) + self.cfg.eps)


OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "adagrad": Adagrad,
    "rmsprop": RMSProp,
    "adam": Adam,
}


def make_optimizer(cfg: OptimConfig | str) -> Optimizer:
    """The optimiser `cfg.name` names, with its knobs from `cfg`; a bare name takes the schema's defaults."""
    if isinstance(cfg, str):
        cfg = OptimConfig(name=cfg)
    if cfg.name not in OPTIMIZER_CLASSES:
        raise UserError(f"unknown optimiser {cfg.name!r}: choose one of {', '.join(OPTIMIZER_CLASSES)}.")
    return OPTIMIZER_CLASSES[cfg.name](cfg)
