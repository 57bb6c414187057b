"""What a gated model asks of a cell, and the named arrays that pass between them.

A cell owns one layer's recurrence: its parameters, its forward pass over T steps (which, for
training, also writes the per-step coefficients of the backward pass), and the backward step.
The model (`rnnexp.engine.gated.GatedLM`) owns everything the cells share: embedding, layers,
dropout, output layer, truncation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar

import numpy as np

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.threads import WorkerPool

Params = dict[str, np.ndarray]
Index = int | slice  # one step t, or the steps a window depth covers at once
Uniform = Callable[[tuple[int, ...], float], np.ndarray]  # (shape, bound) -> uniform draw in ±bound


@dataclass
class LayerPass:
    """One layer's forward pass over T steps, time-major; a cell extends it with what its backward pass needs."""

    inputs: np.ndarray  # (T, B, in): the layer's input, after dropout
    h0: np.ndarray  # (B, H): the state the first step starts from
    h: np.ndarray  # (T, B, H): the state after every step

    def h_prev(self) -> np.ndarray:
        """(T, B, H): the state each step starts from."""
        out = np.empty_like(self.h)
        out[0] = self.h0
        out[1:] = self.h[:-1]
        return out

    def final_state(self, at: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        """The layer's part of the carried state after step at[b] of each row b: h, then (LSTM) c."""
        return [self.h[at, rows]]


@dataclass
class PreactivationGrads:
    """dL/d(pre-activations) of a layer's steps, one named array per kind; a cell defines the fields."""

    def parts(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def at(self, index: Index):
        """The same gradients at step(s) `index` (views)."""
        return type(self)(*(part[index] for part in self.parts()))

    def flat(self):
        """The same gradients with time and batch merged into rows, (T·B, width) (views)."""
        return type(self)(*(part.reshape(-1, part.shape[-1]) for part in self.parts()))

    def add_at(self, index: Index, other: PreactivationGrads) -> None:
        """Sum `other`, the gradients of steps `index`, into these."""
        for mine, theirs in zip(self.parts(), other.parts()):
            mine[index] += theirs


PassT = TypeVar("PassT", bound=LayerPass)
GradsT = TypeVar("GradsT", bound=PreactivationGrads)


class Cell(Protocol[PassT, GradsT]):
    """One layer's recurrence over hidden size `H`; its input weights are named `Wx` (rows, input size)."""

    name: str  # the parameters' prefix, `<name><layer>_`
    state_parts: int  # (B, H) arrays a layer carries between batches: h, and the LSTM's c

    def __init__(self, hidden_dim: int) -> None: ...

    def new_params(self, uniform: Uniform, input_size: int, dtype: np.dtype, cfg: ModelConfig) -> Params:
        """The layer's parameters (name without prefix -> array), drawn in this order from `uniform`."""
        ...

    def forward(
        self, p: Params, inputs: np.ndarray, state0: np.ndarray | None, pool: WorkerPool, backward: bool
    ) -> PassT:
        """The recurrence over the (T, B, in) `inputs` from `state0` (B, state_parts·H) or zeros; with
        `backward`, each step's backward coefficients too."""
        ...

    def back(
        self, layer: PassT, t: Index, dh: np.ndarray, dc: np.ndarray | None, out: GradsT | None = None
    ) -> tuple[GradsT, np.ndarray | None]:
        """Steps `t` backwards from dL/dh_t (and dL/dc_t): their pre-activation gradients (into `out` if
        given) and dL/dc_{t-1} (None for a cell without c)."""
        ...

    def recurrent(self, p: Params, layer: PassT, t: Index, dh: np.ndarray, grads: GradsT) -> np.ndarray:
        """dL/dh_{t-1} from steps `t`' pre-activation gradients (and their dL/dh_t where h_{t-1} enters directly)."""
        ...

    def input_grad(self, p: Params, grads: GradsT, out: np.ndarray | None = None) -> np.ndarray:
        """dL/d(the layer's input) from pre-activation gradients (into `out` if given)."""
        ...

    def new_grads(self, T: int, B: int, dtype: np.dtype, zero: bool) -> GradsT:
        """Pre-activation gradient arrays for T steps of B rows, zeroed or not."""
        ...

    def weight_tasks(self, layer: PassT, acc: GradsT, prefix: str, grads: Params) -> list[Callable[[], None]]:
        """Tasks of about equal cost that write the layer's weight gradients into `grads` under `prefix`."""
        ...


@dataclass
class HalvedWeights:
    """A cell's weights transposed for the forward products, the σ gates' rows halved (see `sigmoid_from_tanh`)."""

    input_t: np.ndarray  # Wxᵀ, contiguous
    bias: np.ndarray
    recurrent_t: np.ndarray  # Whᵀ, contiguous


def halve_sigmoid_rows(p: Params, hidden_dim: int, sigmoid_blocks: int) -> HalvedWeights:
    """Wxᵀ, b and Whᵀ with the first `sigmoid_blocks` gate blocks halved: then tanh of a pre-activation
    gives tanh(a/2) for those gates, which `sigmoid_from_tanh` turns into σ(a)."""
    scale = np.ones(p["b"].shape[0], p["b"].dtype)
    scale[: sigmoid_blocks * hidden_dim] = 0.5
    return HalvedWeights(
        np.ascontiguousarray((p["Wx"] * scale[:, None]).T),
        p["b"] * scale,
        np.ascontiguousarray((p["Wh"] * scale[:, None]).T),
    )


def project_inputs(
    p: Params, inputs: np.ndarray, pool: WorkerPool, hidden_dim: int, sigmoid_blocks: int
) -> tuple[HalvedWeights, np.ndarray]:
    """Every step's Wx x_t + b at once, (T, B, kH), σ rows halved, and the halved weights the time loop uses."""
    weights = halve_sigmoid_rows(p, hidden_dim, sigmoid_blocks)
    T, B = inputs.shape[:2]
    projected = np.empty((T, B, weights.bias.shape[0]), inputs.dtype)
    pool.matmul(inputs.reshape(T * B, -1), weights.input_t, projected.reshape(T * B, -1), weights.bias)
    return weights, projected


def sigmoid_from_tanh(a: np.ndarray) -> None:
    """σ(a) = (1 + tanh(a/2)) / 2, in place on tanh(a/2): one tanh serves every gate of a step."""
    a *= 0.5
    a += 0.5


def zero_or(state0: np.ndarray | None, start: int, stop: int, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Columns start:stop of the carried state, contiguous, or zeros without one."""
    return np.zeros(shape, dtype) if state0 is None else np.ascontiguousarray(state0[:, start:stop])
