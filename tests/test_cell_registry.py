"""A cell is a plug-in: a toy cell defined here, registered as the docs say, is built by `build_model`
and passes central differences in every truncation mode."""

import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from rnnexp.config import schema
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import GatedLM, build_model
from rnnexp.engine.cells.protocol import LayerPass, Params, PreactivationGrads, Uniform, zero_or
from rnnexp.engine.gradcheck import relative_errors
from rnnexp.engine.threads import WorkerPool


@dataclass
class ElmanPass(LayerPass):
    slope: np.ndarray | None  # (T, B, H): 1 - h², set by a training forward pass


@dataclass
class ElmanGrads(PreactivationGrads):
    a: np.ndarray  # (…, H): dL/da


class Elman:
    """h_t = tanh(Wx x_t + Wh h_{t-1} + b): the tutorial's cell with a bias, as small as a cell gets."""

    name, state_parts = "elman", 1

    def __init__(self, hidden_dim: int):
        self.H = hidden_dim

    def new_params(self, uniform: Uniform, input_size: int, dtype: np.dtype, cfg: ModelConfig) -> Params:
        bound = 1 / np.sqrt(self.H)
        return {
            "Wx": uniform((self.H, input_size), bound),
            "Wh": uniform((self.H, self.H), bound),
            "b": np.zeros(self.H, dtype),
        }

    def forward(self, p, inputs, state0, pool: WorkerPool, backward: bool) -> ElmanPass:
        T, B = inputs.shape[:2]
        h0 = zero_or(state0, 0, self.H, (B, self.H), inputs.dtype)
        a = inputs @ p["Wx"].T + p["b"]
        h, prev = np.empty_like(a), h0
        for t in range(T):
            h[t] = np.tanh(a[t] + prev @ p["Wh"].T)
            prev = h[t]
        return ElmanPass(inputs, h0, h, 1 - h * h if backward else None)

    def back(self, layer: ElmanPass, t, dh, dc, out=None):
        assert layer.slope is not None
        if out is None:
            return ElmanGrads(dh * layer.slope[t]), None
        np.multiply(dh, layer.slope[t], out=out.a)
        return out, None

    def recurrent(self, p, layer, t, dh, grads: ElmanGrads):
        return grads.a @ p["Wh"]

    def input_grad(self, p, grads: ElmanGrads, out=None):
        return np.matmul(grads.a, p["Wx"], out=out)

    def new_grads(self, T, B, dtype, zero) -> ElmanGrads:
        return ElmanGrads((np.zeros if zero else np.empty)((T, B, self.H), dtype))

    def weight_tasks(self, layer: ElmanPass, acc: ElmanGrads, prefix, grads):
        G = acc.a.reshape(-1, self.H)
        X = layer.inputs.reshape(G.shape[0], -1)

        def wx():
            grads[f"{prefix}_Wx"], grads[f"{prefix}_b"] = G.T @ X, G.sum(axis=0)

        def wh():
            grads[f"{prefix}_Wh"] = G.T @ layer.h_prev().reshape(G.shape[0], self.H)

        return [wx, wh]


@pytest.fixture
def elman(monkeypatch):
    """The registration ARCHITECTURE.md describes: the cell's module under `rnnexp.engine.cells`, its name in CELLS."""
    module = types.ModuleType("rnnexp.engine.cells.elman")
    module.CELL = Elman
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(schema.CELLS, "elman", 1)


def plain_forward(model: GatedLM):
    """The toy model's function written token by token: the objective central differences take."""

    def forward(params: dict):
        H, layers = model.H, model.layers

        def run(state, words):
            h = [np.array(state[l * H : (l + 1) * H]) for l in range(layers)]
            for w in words:
                below = params["U"][:, w]
                for l in range(layers):
                    p = {k: params[f"elman{l}_{k}"] for k in ("Wx", "Wh", "b")}
                    h[l] = np.tanh(p["Wx"] @ below + p["Wh"] @ h[l] + p["b"])
                    below = h[l]
            return np.concatenate(h)

        def nll(state, target):
            logits = params["V"] @ state[-H:]
            top = logits.max()
            return float(top + np.log(np.exp(logits - top).sum()) - logits[target])

        return run, nll

    return forward


@pytest.mark.parametrize(("truncation", "truncate"), [("window", 0), ("window", 2), ("chunk", 3), ("full", 1)])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_registered_toy_cell_is_built_and_passes_central_differences(elman, truncation, truncate, layers):
    cfg = ModelConfig(
        cell="elman", hidden_dim=4, bptt_truncate=truncate, truncation=truncation, dtype="float64", layers=layers
    )
    model = build_model(cfg, 9, 0)
    assert isinstance(model, GatedLM) and model.state_size == 4 * layers
    assert list(model.params) == ["U", *(f"elman{l}_{k}" for l in range(layers) for k in ("Wx", "Wh", "b")), "V"]
    rng = np.random.default_rng(1)
    for p in model.params.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)  # biases too, so that no term is zero
    x, y = rng.integers(0, 9, (2, 7))
    errors = relative_errors(model, x, y, forward=plain_forward(model))
    assert max(errors.values()) < 1e-6, errors


def test_an_unregistered_cell_is_one_clear_error():
    from rnnexp.errors import UserError

    with pytest.raises(UserError, match="model.cell must be one of rnn, gru, lstm, got 'elman'."):
        build_model(ModelConfig(cell="elman", hidden_dim=4, bptt_truncate=2, truncation="window"), 9, 0)
