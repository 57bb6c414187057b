"""The LSTM and the GRU built gate by gate, in the tutorial's style: the oracle the fast cells are tested against.

The tutorial composes its RNN from gates that each know their forward and backward pass
(`MultiplyGate`, `AddGate`, `Tanh` and `Softmax` in `rnnexp.engine.reference.tutorial`). The gated cells add
a `Sigmoid`, an elementwise `ProductGate` and a `ComplementGate` (1 - x), and are composed the
same way: one token at a time, one sentence at a time, every intermediate kept. `GateByGateLM.bptt` is
the tutorial's double loop: the error of each output t is carried back through at most `depth`
earlier steps (None: all of them; chunk mode is a chunk at a time from the carried state),
through every layer, so each truncation mode is defined here once, plainly. Like the tutorial's,
it returns gradients of the summed loss. Slow on purpose.

Parameters are those of the fast model, `rnnexp.engine.gated.GatedLM` (same names, gate rows stacked in
the cells' `GATES` order); the state is the same flat vector (per layer h, then c).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnexp.engine.cells.gru import GATES as GRU_GATES
from rnnexp.engine.cells.lstm import GATES as LSTM_GATES
from rnnexp.engine.reference.tutorial import AddGate, MultiplyGate, Softmax, Tanh


class Sigmoid:
    def forward(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def backward(self, x, top_diff):
        output = self.forward(x)
        return (1.0 - output) * output * top_diff


class ProductGate:
    """The elementwise product of two vectors."""

    def forward(self, x1, x2):
        return x1 * x2

    def backward(self, x1, x2, dz):
        return dz * x2, dz * x1


class ComplementGate:
    def forward(self, x):
        return 1.0 - x

    def backward(self, x, dz):
        return -dz * np.ones_like(x)


mulGate = MultiplyGate()
addGate = AddGate()
prodGate = ProductGate()
complementGate = ComplementGate()
sigmoid = Sigmoid()
tanh = Tanh()


def _affine(W, x, U, h, b):
    """W x + U h + b through the gates: (the intermediates backward needs, the sum)."""
    mulw, mulu = mulGate.forward(W, x), mulGate.forward(U, h)
    add = addGate.forward(mulw, mulu)
    return (mulw, mulu, add), addGate.forward(add, b)


def _affine_backward(W, x, U, h, b, saved, dout):
    mulw, mulu, add = saved
    dadd, db = addGate.backward(add, b, dout)
    dmulw, dmulu = addGate.backward(mulw, mulu, dadd)
    dW, dx = mulGate.backward(W, x, dmulw)
    dU, dh = mulGate.backward(U, h, dmulu)
    return dW, dx, dU, dh, db


class LSTMLayer:
    """One LSTM step: i, f, o = σ(a), g = tanh(a); c = f c_prev + i g; h = o tanh(c)."""

    def forward(self, x, prev_h, prev_c, P):
        self.x, self.prev_h, self.prev_c = x, prev_h, prev_c
        self.add, self.a, self.act = {}, {}, {}
        for k in LSTM_GATES:
            self.add[k], self.a[k] = _affine(P["Wx"][k], x, P["Wh"][k], prev_h, P["b"][k])
            self.act[k] = (tanh if k == "g" else sigmoid).forward(self.a[k])
        self.fc = prodGate.forward(self.act["f"], prev_c)
        self.ig = prodGate.forward(self.act["i"], self.act["g"])
        self.c = addGate.forward(self.fc, self.ig)
        self.tc = tanh.forward(self.c)
        self.h = prodGate.forward(self.act["o"], self.tc)

    def backward(self, P, dh, dc_next):
        """From the error at this step's h and c: (dx, dprev_h, dprev_c, gradients)."""
        do, dtc = prodGate.backward(self.act["o"], self.tc, dh)
        dc = addGate.forward(dc_next, tanh.backward(self.c, dtc))
        dfc, dig = addGate.backward(self.fc, self.ig, dc)
        df, dprev_c = prodGate.backward(self.act["f"], self.prev_c, dfc)
        di, dg = prodGate.backward(self.act["i"], self.act["g"], dig)
        dact = {"i": di, "f": df, "o": do, "g": dg}
        grads = {"Wx": {}, "Wh": {}, "b": {}}
        dx, dprev_h = 0.0, 0.0
        for k in LSTM_GATES:
            da = (tanh if k == "g" else sigmoid).backward(self.a[k], dact[k])
            dW, dx_k, dU, dh_k, db = _affine_backward(
                P["Wx"][k], self.x, P["Wh"][k], self.prev_h, P["b"][k], self.add[k], da
            )
            grads["Wx"][k], grads["Wh"][k], grads["b"][k] = dW, dU, db
            dx, dprev_h = dx + dx_k, dprev_h + dh_k
        return dx, dprev_h, dprev_c, grads


class GRULayer:
    """One GRU step, reset after the product: n = tanh(Wx_n x + b_n + r (Wh_n h + bhn)); h = (1-z) n + z h."""

    def forward(self, x, prev_h, P):
        self.x, self.prev_h = x, prev_h
        self.add, self.a, self.act = {}, {}, {}
        for k in ("r", "z"):
            self.add[k], self.a[k] = _affine(P["Wx"][k], x, P["Wh"][k], prev_h, P["b"][k])
            self.act[k] = sigmoid.forward(self.a[k])
        self.mulhn = mulGate.forward(P["Wh"]["n"], prev_h)
        self.hn = addGate.forward(self.mulhn, P["bhn"])
        self.mulxn = mulGate.forward(P["Wx"]["n"], x)
        self.xn = addGate.forward(self.mulxn, P["b"]["n"])
        self.rhn = prodGate.forward(self.act["r"], self.hn)
        self.an = addGate.forward(self.xn, self.rhn)
        self.n = tanh.forward(self.an)
        self.omz = complementGate.forward(self.act["z"])
        self.zn = prodGate.forward(self.omz, self.n)
        self.zh = prodGate.forward(self.act["z"], prev_h)
        self.h = addGate.forward(self.zn, self.zh)

    def backward(self, P, dh, dc_next):
        """From the error at this step's h: (dx, dprev_h, None, gradients); the GRU has no c."""
        dzn, dzh = addGate.backward(self.zn, self.zh, dh)
        dz_direct, dprev_h_direct = prodGate.backward(self.act["z"], self.prev_h, dzh)
        domz, dn = prodGate.backward(self.omz, self.n, dzn)
        dz = addGate.forward(dz_direct, complementGate.backward(self.act["z"], domz))
        dan = tanh.backward(self.an, dn)
        dxn, drhn = addGate.backward(self.xn, self.rhn, dan)
        dr, dhn = prodGate.backward(self.act["r"], self.hn, drhn)
        dmulhn, dbhn = addGate.backward(self.mulhn, P["bhn"], dhn)
        dWhn, dprev_h_n = mulGate.backward(P["Wh"]["n"], self.prev_h, dmulhn)
        dmulxn, dbn = addGate.backward(self.mulxn, P["b"]["n"], dxn)
        dWxn, dx_n = mulGate.backward(P["Wx"]["n"], self.x, dmulxn)
        grads = {"Wx": {"n": dWxn}, "Wh": {"n": dWhn}, "b": {"n": dbn}, "bhn": dbhn}
        dx, dprev_h = dx_n, addGate.forward(dprev_h_direct, dprev_h_n)
        for k, dact in (("r", dr), ("z", dz)):
            da = sigmoid.backward(self.a[k], dact)
            dW, dx_k, dU, dh_k, db = _affine_backward(
                P["Wx"][k], self.x, P["Wh"][k], self.prev_h, P["b"][k], self.add[k], da
            )
            grads["Wx"][k], grads["Wh"][k], grads["b"][k] = dW, dU, db
            dx, dprev_h = dx + dx_k, dprev_h + dh_k
        return dx, dprev_h, None, grads


class GateStep:
    """One time step: the embedding (U times the one-hot input), every layer, the output's logits."""

    def forward(self, model, word, prev, masks_t):
        self.input = np.zeros(model.vocab_size)
        self.input[word] = 1
        self.embed = mulGate.forward(model.U, self.input)
        self.masks_t = masks_t
        self.layers, self.raw_inputs = [], []
        inp = self.embed
        for l in range(model.n_layers):
            self.raw_inputs.append(inp)
            if masks_t is not None:
                inp = prodGate.forward(inp, masks_t[0][l])
            layer = LSTMLayer() if model.cell == "lstm" else GRULayer()
            if model.cell == "lstm":
                layer.forward(inp, prev[l][0], prev[l][1], model.P[l])
            else:
                layer.forward(inp, prev[l][0], model.P[l])
            self.layers.append(layer)
            inp = layer.h
        self.top = inp if masks_t is None else prodGate.forward(inp, masks_t[1])
        self.mulv = mulGate.forward(model.Vmat, self.top)

    def states(self):
        return [(layer.h, getattr(layer, "c", None)) for layer in self.layers]

    def backward(self, model, dstate, dmulv, grads):
        """The error at this step's states (and, for the chain's first step, its output) carried one step back."""
        dh_above = 0.0
        if dmulv is not None:
            dVmat, dtop = mulGate.backward(model.Vmat, self.top, dmulv)
            grads["Vmat"] += dVmat
            dh_above = dtop if self.masks_t is None else prodGate.backward(self.layers[-1].h, self.masks_t[1], dtop)[0]
        previous = [None] * model.n_layers
        for l in range(model.n_layers - 1, -1, -1):
            dh, dc = dstate[l]
            dx, dprev_h, dprev_c, g = self.layers[l].backward(model.P[l], addGate.forward(dh, dh_above), dc)
            for name, part in g.items():
                if name == "bhn":
                    grads[l]["bhn"] += part
                    continue
                for k, value in part.items():
                    grads[l][name][k] += value
            if self.masks_t is not None:
                dx = prodGate.backward(self.raw_inputs[l], self.masks_t[0][l], dx)[0]
            previous[l] = (dprev_h, dprev_c if dprev_c is not None else 0.0)
            dh_above = dx
        dU, _ = mulGate.backward(model.U, self.input, dh_above)
        grads["U"] += dU
        return previous


class GateByGateLM:
    """A gated language model evaluated gate by gate; `params` as `GatedLM.params` (copied to float64)."""

    def __init__(self, cell: str, params: dict, n_layers: int, hidden_dim: int):
        self.cell, self.n_layers, self.H = cell, n_layers, hidden_dim
        self.params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}
        self.tied = "V" not in params
        self.U = self.params["U"]
        self.Vmat = self.U.T if self.tied else self.params["V"]
        self.vocab_size = self.U.shape[1]
        gates = LSTM_GATES if cell == "lstm" else GRU_GATES
        H = hidden_dim
        self.P = []
        for l in range(n_layers):
            prefix = f"{cell}{l}_"
            split: dict[str, Any] = {
                name: {k: self.params[prefix + name][j * H : (j + 1) * H] for j, k in enumerate(gates)}
                for name in ("Wx", "Wh", "b")
            }
            if cell == "gru":
                split["bhn"] = self.params[prefix + "bhn"]
            self.P.append(split)

    @classmethod
    def like(cls, model, params: dict | None = None) -> GateByGateLM:
        """The reference twin of a `GatedLM`, with its parameters or `params`."""
        return cls(model.cell, model.params if params is None else params, model.layers, model.H)

    # ---------------------------------------------------------------- state
    def split_state(self, state):
        """The flat carried state as per layer (h, c); zeros when None."""
        H, out = self.H, []
        width = 2 * H if self.cell == "lstm" else H
        for l in range(self.n_layers):
            if state is None:
                out.append((np.zeros(H), np.zeros(H) if self.cell == "lstm" else None))
                continue
            part = np.asarray(state, dtype=np.float64)[l * width : (l + 1) * width]
            out.append((part[:H], part[H:] if self.cell == "lstm" else None))
        return out

    def join_state(self, states) -> np.ndarray:
        return np.concatenate([part for h, c in states for part in ((h, c) if c is not None else (h,))])

    # -------------------------------------------------------------- forward
    def forward_propagation(self, x, h0=None, masks=None):
        """One GateStep per token; `masks` = (per layer (T, in) arrays, (T, H) array) or None."""
        steps, prev = [], self.split_state(h0)
        for t, word in enumerate(x):
            step = GateStep()
            masks_t = None if masks is None else ([m[t] for m in masks[0]], masks[1][t])
            step.forward(self, word, prev, masks_t)
            prev = step.states()
            steps.append(step)
        return steps

    def run(self, state, words) -> np.ndarray:
        """The flat state after reading `words` from `state`."""
        steps = self.forward_propagation(words, state)
        return self.join_state(steps[-1].states()) if steps else np.asarray(state, dtype=np.float64)

    def nll(self, state, target: int) -> float:
        """-log p(target) from the top layer's h in a flat state."""
        top = self.split_state(state)[-1][0]
        logits = mulGate.forward(self.Vmat, top)
        shift = logits.max()
        return float(shift + np.log(np.exp(logits - shift).sum()) - logits[target])

    def calculate_loss(self, x, y, h0=None, masks=None) -> float:
        """Summed negative log-likelihood of a sentence."""
        output = Softmax()
        return float(sum(output.loss(step.mulv, y[t]) for t, step in enumerate(self.forward_propagation(x, h0, masks))))

    # ------------------------------------------------------------- backward
    def bptt(self, x, y, h0=None, masks=None, depth: int | None = None) -> dict:
        """Gradients of the summed loss, each output's error carried back through at most `depth` steps."""
        assert len(x) == len(y)
        output = Softmax()
        steps = self.forward_propagation(x, h0, masks)
        grads: dict[Any, Any] = {"U": np.zeros_like(self.U), "Vmat": np.zeros_like(self.Vmat)}
        for l in range(self.n_layers):
            grads[l] = {
                name: {k: np.zeros_like(w) for k, w in part.items()} if isinstance(part, dict) else np.zeros_like(part)
                for name, part in self.P[l].items()
            }
        for t in range(len(steps)):
            dmulv = output.diff(steps[t].mulv, y[t])
            dstate = [(0.0, 0.0)] * self.n_layers
            first = 0 if depth is None else max(0, t - depth)
            for i in range(t, first - 1, -1):
                dstate = steps[i].backward(self, dstate, dmulv if i == t else None, grads)
        return self._stacked(grads)

    def _stacked(self, grads: dict) -> dict:
        """The gradients under `GatedLM`'s names, gate rows stacked in its order."""
        gates = LSTM_GATES if self.cell == "lstm" else GRU_GATES
        out = {"U": grads["U"] + (grads["Vmat"].T if self.tied else 0.0)}
        for l in range(self.n_layers):
            prefix = f"{self.cell}{l}_"
            for name in ("Wx", "Wh", "b"):
                out[prefix + name] = np.concatenate([grads[l][name][k] for k in gates])
            if self.cell == "gru":
                out[prefix + "bhn"] = grads[l]["bhn"]
        if not self.tied:
            out["V"] = grads["Vmat"]
        return {name: out[name] for name in self.params}
