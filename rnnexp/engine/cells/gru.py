"""The GRU cell in PyTorch's and cuDNN's variant (the reset gate applied after the product), gate rows
stacked r, z, n in Wx (3H, in), Wh (3H, H) and b (3H), with bhn (H) inside the reset:

    r, z = σ(Wx_rz x_t + Wh_rz h_{t-1} + b_rz)
    n_t  = tanh(Wx_n x_t + b_n + r (Wh_n h_{t-1} + bhn))
    h_t  = (1 - z) n_t + z h_{t-1}

and backwards, with dn = dL/dh_t (1 - z)(1 - n²), the gradient of n's input term:

    dL/d[r, z, hidden n-term] = [dn (Wh_n h_{t-1} + bhn) r(1-r),  dL/dh_t (h_{t-1} - n) z(1-z),  dn r]
    dL/dh_{t-1} = (those) · Wh + dL/dh_t z.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.cells.protocol import (
    Index,
    LayerPass,
    Params,
    PreactivationGrads,
    Uniform,
    project_inputs,
    sigmoid_from_tanh,
    zero_or,
)
from rnnexp.engine.threads import WorkerPool

GATES = ("r", "z", "n")  # the order of the stacked rows of Wx, Wh and b


@dataclass
class GRUCoefficients:
    """What the backward step multiplies by, written by a training forward pass (per unit of dL/dh_t)."""

    candidate: np.ndarray  # (T, B, H): (1 - z)(1 - n²), dn per dL/dh_t
    reset: np.ndarray  # (T, B, H): (Wh_n h_{t-1} + bhn) r(1-r), per dn
    update: np.ndarray  # (T, B, H): (h_{t-1} - n) z(1-z)
    r: np.ndarray  # (T, B, H): views of the gates
    z: np.ndarray


@dataclass
class GRUPass(LayerPass):
    gates: np.ndarray  # (T, B, 2H): r, z
    n: np.ndarray  # (T, B, H): candidate states
    ghn: np.ndarray  # (T, B, H): Wh_n h_{t-1} + bhn
    coef: GRUCoefficients | None  # set by a training forward pass


@dataclass
class GRUGrads(PreactivationGrads):
    hidden: np.ndarray  # (…, 3H): dL/d[r, z pre-activations, hidden n-term]
    candidate: np.ndarray  # (…, H): dL/d(n's input term), dn


class GRU:
    name, state_parts = "gru", 1

    def __init__(self, hidden_dim: int):
        self.H = hidden_dim

    def new_params(self, uniform: Uniform, input_size: int, dtype: np.dtype, cfg: ModelConfig) -> Params:
        """PyTorch's initialisation: weights uniform in ±1/√H, biases 0."""
        H = self.H
        return {
            "Wx": uniform((3 * H, input_size), 1 / np.sqrt(H)),
            "Wh": uniform((3 * H, H), 1 / np.sqrt(H)),
            "b": np.zeros(3 * H, dtype),
            "bhn": np.zeros(H, dtype),
        }

    def forward(
        self, p: Params, inputs: np.ndarray, state0: np.ndarray | None, pool: WorkerPool, backward: bool
    ) -> GRUPass:
        H = self.H
        T, B = inputs.shape[:2]
        dtype = inputs.dtype
        weights, Xp = project_inputs(p, inputs, pool, H, 2)
        h = np.empty((T, B, H), dtype)
        rz = np.empty((T, B, 2 * H), dtype)
        layer = GRUPass(inputs, zero_or(state0, 0, H, (B, H), dtype), h, rz, np.empty_like(h), np.empty_like(h), None)
        if backward:
            layer.coef = GRUCoefficients(np.empty_like(h), np.empty_like(h), np.empty_like(h), rz[..., :H], rz[..., H:])
        self._steps(layer, p["bhn"], Xp, weights.recurrent_t)
        return layer

    def _steps(self, layer: GRUPass, bhn: np.ndarray, Xp: np.ndarray, WhT: np.ndarray) -> None:
        """The time loop; Xp holds Wx x_t + b (σ rows halved). A training pass also writes each step's
        backward coefficients while its values are in cache."""
        H = self.H
        rz, N, ghn, Hs, coef = layer.gates, layer.n, layer.ghn, layer.h, layer.coef
        gh, one_minus_z = np.empty_like(Xp[0]), np.empty_like(Hs[0])
        h = layer.h0
        for t in range(Xp.shape[0]):
            np.matmul(h, WhT, out=gh)
            a = rz[t]
            np.add(gh[:, : 2 * H], Xp[t][:, : 2 * H], out=a)
            np.tanh(a, out=a)
            sigmoid_from_tanh(a)
            r, z = a[:, :H], a[:, H:]
            np.add(gh[:, 2 * H :], bhn, out=ghn[t])
            n = N[t]
            np.multiply(r, ghn[t], out=n)
            n += Xp[t][:, 2 * H :]
            np.tanh(n, out=n)
            ht = Hs[t]
            np.subtract(h, n, out=ht)  # h_{t-1} - n until the update below
            if coef is not None:
                Kn, Kr, Kz = coef.candidate[t], coef.reset[t], coef.update[t]
                np.subtract(1.0, z, out=one_minus_z)
                np.multiply(one_minus_z, z, out=Kz)
                Kz *= ht
                np.multiply(n, n, out=Kn)
                np.subtract(1.0, Kn, out=Kn)
                Kn *= one_minus_z
                np.subtract(1.0, r, out=Kr)
                Kr *= r
                Kr *= ghn[t]
            ht *= z
            ht += n
            h = ht

    def back(
        self, layer: GRUPass, t: Index, dh: np.ndarray, dc: np.ndarray | None, out: GRUGrads | None = None
    ) -> tuple[GRUGrads, None]:
        assert layer.coef is not None  # set by the training forward pass
        coef, H = layer.coef, self.H
        if out is None:
            out = GRUGrads(np.empty((*dh.shape[:-1], 3 * H), dh.dtype), np.empty_like(dh))
        Gh, dn = out.hidden, out.candidate
        np.multiply(dh, coef.candidate[t], out=dn)
        np.multiply(dn, coef.reset[t], out=Gh[..., :H])
        np.multiply(dh, coef.update[t], out=Gh[..., H : 2 * H])
        np.multiply(dn, coef.r[t], out=Gh[..., 2 * H :])
        return out, None

    def recurrent(self, p: Params, layer: GRUPass, t: Index, dh: np.ndarray, grads: GRUGrads) -> np.ndarray:
        assert layer.coef is not None
        out = grads.hidden @ p["Wh"]
        out += dh * layer.coef.z[t]
        return out

    def input_grad(self, p: Params, grads: GRUGrads, out: np.ndarray | None = None) -> np.ndarray:
        Wx, H = p["Wx"], self.H
        out = np.matmul(grads.hidden[..., : 2 * H], Wx[: 2 * H], out=out)
        out += grads.candidate @ Wx[2 * H :]
        return out

    def new_grads(self, T: int, B: int, dtype: np.dtype, zero: bool) -> GRUGrads:
        make = np.zeros if zero else np.empty
        return GRUGrads(make((T, B, 3 * self.H), dtype), make((T, B, self.H), dtype))

    def weight_tasks(self, layer: GRUPass, acc: GRUGrads, prefix: str, grads: Params) -> list[Callable[[], None]]:
        H = self.H
        Gh, dn = acc.hidden.reshape(-1, 3 * H), acc.candidate.reshape(-1, H)
        X = layer.inputs.reshape(Gh.shape[0], -1)

        def wx() -> None:
            dWx = np.empty((3 * H, X.shape[1]), X.dtype)
            np.matmul(Gh[:, : 2 * H].T, X, out=dWx[: 2 * H])
            np.matmul(dn.T, X, out=dWx[2 * H :])
            grads[f"{prefix}_Wx"] = dWx
            grads[f"{prefix}_b"] = np.concatenate([Gh[:, : 2 * H].sum(axis=0), dn.sum(axis=0)])

        def wh() -> None:
            grads[f"{prefix}_Wh"] = Gh.T @ layer.h_prev().reshape(Gh.shape[0], H)
            grads[f"{prefix}_bhn"] = Gh[:, 2 * H :].sum(axis=0)

        return [wx, wh]


CELL = GRU
