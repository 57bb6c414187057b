"""The LSTM cell, gate rows stacked i, f, o, g in Wx (4H, in), Wh (4H, H) and b (4H):

    a_t = Wx x_t + Wh h_{t-1} + b,   i, f, o = σ(a_i, a_f, a_o),   g = tanh(a_g)
    c_t = f c_{t-1} + i g,           h_t = o tanh(c_t)

and backwards, with dc = dL/dc_t + dL/dh_t · o (1 - tanh²(c_t)):

    dL/da = [dc g i(1-i),  dc c_{t-1} f(1-f),  dL/dh_t tanh(c_t) o(1-o),  dc i (1-g²)],
    dL/dc_{t-1} = dc f.
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

GATES = ("i", "f", "o", "g")  # the order of the stacked rows of Wx, Wh and b


@dataclass
class LSTMCoefficients:
    """What the backward step multiplies by, written by a training forward pass."""

    gates: np.ndarray  # (T, B, 4, H): dL/da per unit of dc (per unit of dL/dh_t for o), as in the docstring
    dc_dh: np.ndarray  # (T, B, H): o (1 - tanh²(c_t))
    forget: np.ndarray  # (T, B, H): f, a view of the gates


@dataclass
class LSTMPass(LayerPass):
    c0: np.ndarray  # (B, H)
    c: np.ndarray  # (T, B, H): cell states
    gates: np.ndarray  # (T, B, 4H): i, f, o, g
    coef: LSTMCoefficients | None  # set by a training forward pass

    def final_state(self, at: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        return [self.h[at, rows], self.c[at, rows]]


@dataclass
class LSTMGrads(PreactivationGrads):
    gates: np.ndarray  # (…, 4H): dL/da


class LSTM:
    name, state_parts = "lstm", 2

    def __init__(self, hidden_dim: int):
        self.H = hidden_dim

    def new_params(self, uniform: Uniform, input_size: int, dtype: np.dtype, cfg: ModelConfig) -> Params:
        """PyTorch's initialisation: weights uniform in ±1/√H, biases 0 but the forget gate's at `cfg.forget_bias`."""
        H = self.H
        bias = np.zeros(4 * H, dtype)
        bias[H : 2 * H] = cfg.forget_bias
        bound = 1 / np.sqrt(H)
        return {"Wx": uniform((4 * H, input_size), bound), "Wh": uniform((4 * H, H), bound), "b": bias}

    def forward(
        self, p: Params, inputs: np.ndarray, state0: np.ndarray | None, pool: WorkerPool, backward: bool
    ) -> LSTMPass:
        H = self.H
        T, B = inputs.shape[:2]
        dtype = inputs.dtype
        weights, gates = project_inputs(p, inputs, pool, H, 3)
        h = np.empty((T, B, H), dtype)
        h0, c0 = zero_or(state0, 0, H, (B, H), dtype), zero_or(state0, H, 2 * H, (B, H), dtype)
        layer = LSTMPass(inputs, h0, h, c0, np.empty_like(h), gates, None)
        if backward:
            K = np.empty_like(gates).reshape(T, B, 4, H)
            layer.coef = LSTMCoefficients(K, np.empty_like(h), gates[..., H : 2 * H])
        self._steps(layer, weights.recurrent_t)
        return layer

    def _steps(self, layer: LSTMPass, WhT: np.ndarray) -> None:
        """The time loop; on entry the gates hold Wx x_t + b (σ rows halved). A training pass also writes
        each step's backward coefficients while its values are in cache."""
        H = self.H
        gates, C, Hs, coef = layer.gates, layer.c, layer.h, layer.coef
        K = None if coef is None else coef.gates.reshape(gates.shape)
        tmp, ig = np.empty_like(gates[0]), np.empty_like(Hs[0])
        h, c = layer.h0, layer.c0
        for t in range(gates.shape[0]):
            a = gates[t]
            np.matmul(h, WhT, out=tmp)
            a += tmp
            np.tanh(a, out=a)
            sig = a[:, : 3 * H]
            sigmoid_from_tanh(sig)
            i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            ct, ht = C[t], Hs[t]
            np.multiply(f, c, out=ct)
            np.multiply(i, g, out=ig)
            ct += ig
            np.tanh(ct, out=ht)  # tanh(c_t) until multiplied by o below
            if K is not None and coef is not None:
                k, dc_dh = K[t], coef.dc_dh[t]
                np.subtract(1.0, sig, out=k[:, : 3 * H])
                k[:, : 3 * H] *= sig
                k[:, :H] *= g
                k[:, H : 2 * H] *= c
                k[:, 2 * H : 3 * H] *= ht
                np.multiply(g, g, out=k[:, 3 * H :])
                np.subtract(1.0, k[:, 3 * H :], out=k[:, 3 * H :])
                k[:, 3 * H :] *= i
                np.multiply(ht, ht, out=dc_dh)
                np.subtract(1.0, dc_dh, out=dc_dh)
                dc_dh *= o
            ht *= o
            h, c = ht, ct

    def back(
        self, layer: LSTMPass, t: Index, dh: np.ndarray, dc: np.ndarray | None, out: LSTMGrads | None = None
    ) -> tuple[LSTMGrads, np.ndarray]:
        assert layer.coef is not None  # set by the training forward pass
        K4, dc_dh, forget = layer.coef.gates, layer.coef.dc_dh, layer.coef.forget
        dc_total = dh * dc_dh[t]
        if dc is not None:
            dc_total += dc
        dA = np.empty((*dh.shape[:-1], 4 * self.H), dh.dtype) if out is None else out.gates
        dA4 = dA.reshape(*dh.shape[:-1], 4, self.H)
        np.multiply(dc_total[..., None, :], K4[t], out=dA4)
        np.multiply(dh, K4[t][..., 2, :], out=dA4[..., 2, :])
        dc_total *= forget[t]
        return LSTMGrads(dA), dc_total

    def recurrent(self, p: Params, layer: LSTMPass, t: Index, dh: np.ndarray, grads: LSTMGrads) -> np.ndarray:
        return grads.gates @ p["Wh"]

    def input_grad(self, p: Params, grads: LSTMGrads, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(grads.gates, p["Wx"], out=out)

    def new_grads(self, T: int, B: int, dtype: np.dtype, zero: bool) -> LSTMGrads:
        return LSTMGrads((np.zeros if zero else np.empty)((T, B, 4 * self.H), dtype))

    def weight_tasks(self, layer: LSTMPass, acc: LSTMGrads, prefix: str, grads: Params) -> list[Callable[[], None]]:
        G = acc.gates.reshape(-1, 4 * self.H)
        X = layer.inputs.reshape(G.shape[0], -1)

        def wx() -> None:
            grads[f"{prefix}_Wx"] = G.T @ X
            grads[f"{prefix}_b"] = G.sum(axis=0)

        def wh() -> None:
            grads[f"{prefix}_Wh"] = G.T @ layer.h_prev().reshape(G.shape[0], self.H)

        return [wx, wh]


CELL = LSTM
