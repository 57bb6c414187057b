"""Gated language models, GRU and LSTM, vectorised over batch and time, with exact truncated BPTT.

    e_t = U[:, x_t]                              the embedding; U is (E, V), stored column-major
    LSTM  i, f, o = σ(a), g = tanh(a),  a = Wx x_t + Wh h_{t-1} + b     gate rows stacked i, f, o, g
          c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)
    GRU   r, z = σ(Wx x_t + Wh h_{t-1} + b)                             gate rows stacked r, z, n
          n_t = tanh(Wx_n x_t + b_n + r (Wh_n h_{t-1} + bhn))           PyTorch's and cuDNN's variant:
          h_t = (1 - z) n_t + z h_{t-1}                                 the reset gate after the product
    o_t = softmax(V h^L_t)                       V (V×H), or Uᵀ with `tie_weights`

Layers stack (the input of layer l > 0 is h^{l-1}_t). Dropout, in training only, sits where
Zaremba et al. put it: on the embeddings, between layers and before the softmax, never on the
recurrent connections. The carried state is one (B, state_size) array, layer after layer, each
layer's h followed (LSTM) by its c, so that the trainer never needs to know the cell.

Truncation modes as in `rnnexp.engine.rnn`: ``window`` (the error of output t flows back through
at most `bptt_truncate` earlier steps, through every layer), ``full``, and ``chunk`` (full BPTT
inside a chunk fed with the carried state). A step backwards is linear in the incoming error with
coefficients fixed by the forward pass, so the window's outputs are pushed back together, one
depth at a time, as one product over every time step at once.

Speed: the input projections of all steps are one product per layer; a step is one (B×H)·(H×kH)
product and one tanh over all k gates (σ(a) = (1 + tanh(a/2)) / 2, with the halving folded,
exactly, into the weights), and the forward step also writes the backward pass's coefficients
while its values are in cache; the weight gradients are one product each after the time loop.
With two threads or more the batched products are split in rows among them (BLAS single-threaded
in each), and the output layer has its own workers; the time loops stay in one thread, since
numpy's small per-step operations hand the GIL back and forth and ran slower split by sequence
block. The split depends only on the shapes and the thread count: results repeat bitwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexp.config.schema import DTYPES, TRUNCATIONS
from rnnexp.engine.class_output import make_output
from rnnexp.engine.grads import column_grad
from rnnexp.engine.inputs import check_batch, draw_word
from rnnexp.engine.rnn import Step
from rnnexp.engine.threads import blas_single_threaded, default_threads
from rnnexp.errors import DivergedError, UserError

GATED_CELLS = ("gru", "lstm")
LSTM_GATES = ("i", "f", "o", "g")  # the order of the stacked rows of Wx, Wh and b
GRU_GATES = ("r", "z", "n")
EMBEDDING_INIT = 0.1  # U and V uniform in ±0.1, as PyTorch's word_language_model initialises them


@dataclass
class DropoutMasks:
    """Inverted-dropout masks (0 or 1/(1-p)), time-major: what a training step multiplies in."""

    inputs: list[np.ndarray]  # per layer, (T, B, its input size): the embeddings, then between layers
    output: np.ndarray  # (T, B, H): the top layer's states before the softmax


@dataclass
class _Layer:
    """One layer's forward pass over T steps, time-major, with what its backward pass needs."""

    inputs: np.ndarray  # (T, B, in): after dropout
    h0: np.ndarray  # (B, H)
    c0: np.ndarray | None  # (B, H), LSTM
    h: np.ndarray  # (T, B, H)
    # Set by the cell's forward pass (Any: each cell sets its own, and the backward pass reads only those):
    c: Any = None  # LSTM: cell states
    gates: Any = None  # LSTM (T, B, 4H): i, f, o, g; GRU (T, B, 2H): r, z
    n: Any = None  # GRU: candidate states
    ghn: Any = None  # GRU: Wh_n h_{t-1} + bhn
    coef: Any = None  # per-step coefficients of the backward pass, from a training forward pass

    def h_prev(self) -> np.ndarray:
        """(T, B, H): the state each step starts from."""
        out = np.empty_like(self.h)
        out[0] = self.h0
        out[1:] = self.h[:-1]
        return out


class _Threads:
    """Independent products split among the model's threads; each worker's BLAS is single-threaded.

    The split depends only on the shapes and the thread count, so results repeat bitwise.
    """

    MIN_ROWS = 64  # fewer rows per thread do not repay the hand-over

    def __init__(self, threads: int):
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    def run(self, tasks: list[Callable[[], None]]) -> None:
        """Tasks dealt round-robin to the threads (the first share in this thread); returns when all are done."""
        shares = [tasks[w :: self.threads] for w in range(min(self.threads, len(tasks)))]
        if len(shares) <= 1:
            for task in tasks:
                task()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="rnnexp-cell")
        futures = [self._executor.submit(_run_all, share) for share in shares[1:]]
        _run_all(shares[0])
        for future in futures:
            future.result()

    def row_blocks(self, n: int) -> list[tuple[int, int]]:
        parts = max(1, min(self.threads, n // self.MIN_ROWS))
        return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]

    def matmul(self, A: np.ndarray, B: np.ndarray, out: np.ndarray, bias: np.ndarray | None = None) -> None:
        """out = A @ B (+ bias), rows split among the threads."""

        def block(r0: int, r1: int) -> Callable[[], None]:
            def task() -> None:
                np.matmul(A[r0:r1], B, out=out[r0:r1])
                if bias is not None:
                    out[r0:r1] += bias

            return task

        self.run([block(r0, r1) for r0, r1 in self.row_blocks(A.shape[0])])


def _run_all(tasks: list[Callable[[], None]]) -> None:
    for task in tasks:
        task()


def _prescaled(p: dict, k: int, H: int, sigmoid_gates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wxᵀ, b and Whᵀ (contiguous) with the σ gates' rows halved: σ(a) = (1 + tanh(a/2)) / 2, exactly."""
    scale = np.ones(k * H, p["b"].dtype)
    scale[: sigmoid_gates * H] = 0.5
    return (
        np.ascontiguousarray((p["Wx"] * scale[:, None]).T),
        p["b"] * scale,
        np.ascontiguousarray((p["Wh"] * scale[:, None]).T),
    )


class _LSTM:
    name, k = "lstm", 4

    def __init__(self, H: int):
        self.H = H

    def forward(self, p: dict, layer: _Layer, backward: bool, threads: _Threads) -> None:
        """The recurrence over T steps; with `backward`, each step's coefficients while its values are in cache."""
        H = self.H
        T, B = layer.h.shape[:2]
        WxT, b, WhT = _prescaled(p, 4, H, 3)
        gates = layer.gates = np.empty((T, B, 4 * H), layer.h.dtype)
        threads.matmul(layer.inputs.reshape(T * B, -1), WxT, gates.reshape(T * B, 4 * H), b)
        layer.c = np.empty_like(layer.h)
        if backward:
            K = np.empty_like(gates)
            layer.coef = (K.reshape(T, B, 4, H), np.empty_like(layer.h), gates[..., H : 2 * H])
        self._steps(layer, WhT, backward)

    def _steps(self, layer: _Layer, WhT: np.ndarray, backward: bool) -> None:
        """The time loop; on entry the gates hold Wx x_t + b, halved for σ."""
        H = self.H
        gates, C, Hs = layer.gates, layer.c, layer.h
        if backward:
            K, dtc = layer.coef[0].reshape(gates.shape), layer.coef[1]
        tmp, ig = np.empty_like(gates[0]), np.empty_like(Hs[0])
        h, c = layer.h0, layer.c0
        assert c is not None  # an LSTM layer always starts from a cell state
        for t in range(gates.shape[0]):
            a = gates[t]
            np.matmul(h, WhT, out=tmp)
            a += tmp
            np.tanh(a, out=a)
            sig = a[:, : 3 * H]
            sig *= 0.5
            sig += 0.5
            i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            ct, ht = C[t], Hs[t]
            np.multiply(f, c, out=ct)
            np.multiply(i, g, out=ig)
            ct += ig
            np.tanh(ct, out=ht)  # tanh(c_t) until multiplied by o below
            if backward:  # dL/da = [dc g i(1-i), dc c_prev f(1-f), dh tanh(c) o(1-o), dc i (1-g²)]
                k = K[t]
                np.subtract(1.0, sig, out=k[:, : 3 * H])
                k[:, : 3 * H] *= sig
                k[:, :H] *= g
                k[:, H : 2 * H] *= c
                k[:, 2 * H : 3 * H] *= ht
                np.multiply(g, g, out=k[:, 3 * H :])
                np.subtract(1.0, k[:, 3 * H :], out=k[:, 3 * H :])
                k[:, 3 * H :] *= i
                np.multiply(ht, ht, out=dtc[t])  # dc/dh = o (1 - tanh²(c))
                np.subtract(1.0, dtc[t], out=dtc[t])
                dtc[t] *= o
            ht *= o
            h, c = ht, ct

    def back(self, layer: _Layer, t, dh: np.ndarray, dc: np.ndarray | None, out: tuple | None = None):
        """Steps `t` backwards from dL/dh_t and dL/dc_t: ((dL/da_t,), dL/dc_{t-1})."""
        K4, dtc, f = layer.coef
        dc_total = dh * dtc[t]
        if dc is not None:
            dc_total += dc
        dA = np.empty((*dh.shape[:-1], 4 * self.H), dh.dtype) if out is None else out[0]
        dA4 = dA.reshape(*dh.shape[:-1], 4, self.H)
        np.multiply(dc_total[..., None, :], K4[t], out=dA4)
        np.multiply(dh, K4[t][..., 2, :], out=dA4[..., 2, :])
        dc_total *= f[t]
        return (dA,), dc_total

    @staticmethod
    def recurrent(p: dict, layer: _Layer, t, dh: np.ndarray, grads: tuple) -> np.ndarray:
        """dL/dh_{t-1} through the gates."""
        return grads[0] @ p["Wh"]

    @staticmethod
    def input_grad(p: dict, grads: tuple, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(grads[0], p["Wx"], out=out)

    def new_acc(self, T: int, B: int, dtype, zero: bool) -> tuple:
        return ((np.zeros if zero else np.empty)((T, B, 4 * self.H), dtype),)

    def weight_tasks(self, layer: _Layer, acc: tuple, prefix: str, grads: dict) -> list[Callable[[], None]]:
        """Two tasks of about equal cost that write the layer's weight gradients into `grads`."""
        G = acc[0].reshape(-1, 4 * self.H)
        X = layer.inputs.reshape(G.shape[0], -1)

        def wx() -> None:
            grads[f"{prefix}_Wx"] = G.T @ X
            grads[f"{prefix}_b"] = G.sum(axis=0)

        def wh() -> None:
            grads[f"{prefix}_Wh"] = G.T @ layer.h_prev().reshape(G.shape[0], self.H)

        return [wx, wh]


class _GRU:
    name, k = "gru", 3

    def __init__(self, H: int):
        self.H = H

    def forward(self, p: dict, layer: _Layer, backward: bool, threads: _Threads) -> None:
        """The recurrence over T steps; with `backward`, each step's coefficients while its values are in cache."""
        H = self.H
        T, B = layer.h.shape[:2]
        WxT, b, WhT = _prescaled(p, 3, H, 2)
        Xp = np.empty((T, B, 3 * H), layer.h.dtype)
        threads.matmul(layer.inputs.reshape(T * B, -1), WxT, Xp.reshape(T * B, 3 * H), b)
        rz = layer.gates = np.empty((T, B, 2 * H), Xp.dtype)
        layer.n, layer.ghn = np.empty_like(layer.h), np.empty_like(layer.h)
        if backward:
            layer.coef = (*(np.empty_like(layer.h) for _ in range(3)), rz[..., :H], rz[..., H:])
        self._steps(layer, p["bhn"], Xp, WhT, backward)

    def _steps(self, layer: _Layer, bhn: np.ndarray, Xp: np.ndarray, WhT: np.ndarray, backward: bool) -> None:
        """The time loop; Xp holds Wx x_t + b, halved for σ."""
        H = self.H
        rz, N, ghn, Hs = layer.gates, layer.n, layer.ghn, layer.h
        if backward:
            Kn, Kr, Kz = layer.coef[:3]
        gh, one_minus_z = np.empty_like(Xp[0]), np.empty_like(Hs[0])
        h = layer.h0
        for t in range(Xp.shape[0]):
            np.matmul(h, WhT, out=gh)
            a = rz[t]
            np.add(gh[:, : 2 * H], Xp[t][:, : 2 * H], out=a)
            np.tanh(a, out=a)
            a *= 0.5
            a += 0.5
            r, z = a[:, :H], a[:, H:]
            np.add(gh[:, 2 * H :], bhn, out=ghn[t])
            n = N[t]
            np.multiply(r, ghn[t], out=n)
            n += Xp[t][:, 2 * H :]
            np.tanh(n, out=n)
            ht = Hs[t]
            np.subtract(h, n, out=ht)  # h_{t-1} - n until the update below
            if backward:  # dL/dn-term = dh (1-z)(1-n²); dL/dr = that · ghn r(1-r); dL/dz = dh (h_{t-1}-n) z(1-z)
                np.subtract(1.0, z, out=one_minus_z)
                np.multiply(one_minus_z, z, out=Kz[t])
                Kz[t] *= ht
                np.multiply(n, n, out=Kn[t])
                np.subtract(1.0, Kn[t], out=Kn[t])
                Kn[t] *= one_minus_z
                np.subtract(1.0, r, out=Kr[t])
                Kr[t] *= r
                Kr[t] *= ghn[t]
            ht *= z
            ht += n
            h = ht

    def back(self, layer: _Layer, t, dh: np.ndarray, dc: np.ndarray | None, out: tuple | None = None):
        """Steps `t` backwards from dL/dh_t: ((dL/d[r, z, hidden n-term], dL/d input n-term), None)."""
        Kn, Kr, Kz, r, _ = layer.coef
        H = self.H
        if out is None:
            Gh = np.empty((*dh.shape[:-1], 3 * H), dh.dtype)
            dAn = np.empty_like(dh)
        else:
            Gh, dAn = out
        np.multiply(dh, Kn[t], out=dAn)
        np.multiply(dAn, Kr[t], out=Gh[..., :H])
        np.multiply(dh, Kz[t], out=Gh[..., H : 2 * H])
        np.multiply(dAn, r[t], out=Gh[..., 2 * H :])
        return (Gh, dAn), None

    def recurrent(self, p: dict, layer: _Layer, t, dh: np.ndarray, grads: tuple) -> np.ndarray:
        """dL/dh_{t-1}: through the update gate directly, and through the gates' product."""
        out = grads[0] @ p["Wh"]
        out += dh * layer.coef[4][t]
        return out

    def input_grad(self, p: dict, grads: tuple, out: np.ndarray | None = None) -> np.ndarray:
        Gh, dAn = grads
        Wx = p["Wx"]
        out = np.matmul(Gh[..., : 2 * self.H], Wx[: 2 * self.H], out=out)
        out += dAn @ Wx[2 * self.H :]
        return out

    def new_acc(self, T: int, B: int, dtype, zero: bool) -> tuple:
        make = np.zeros if zero else np.empty
        return make((T, B, 3 * self.H), dtype), make((T, B, self.H), dtype)

    def weight_tasks(self, layer: _Layer, acc: tuple, prefix: str, grads: dict) -> list[Callable[[], None]]:
        """Two tasks of about equal cost that write the layer's weight gradients into `grads`."""
        H = self.H
        Gh, dAn = acc[0].reshape(-1, 3 * H), acc[1].reshape(-1, H)
        X = layer.inputs.reshape(Gh.shape[0], -1)

        def wx() -> None:
            dWx = np.empty((3 * H, X.shape[1]), X.dtype)
            np.matmul(Gh[:, : 2 * H].T, X, out=dWx[: 2 * H])
            np.matmul(dAn.T, X, out=dWx[2 * H :])
            grads[f"{prefix}_Wx"] = dWx
            grads[f"{prefix}_b"] = np.concatenate([Gh[:, : 2 * H].sum(axis=0), dAn.sum(axis=0)])

        def wh() -> None:
            grads[f"{prefix}_Wh"] = Gh.T @ layer.h_prev().reshape(Gh.shape[0], H)
            grads[f"{prefix}_bhn"] = Gh[:, 2 * H :].sum(axis=0)

        return [wx, wh]


class _TiedOutput(MutableMapping):
    """The output layer's view of the parameters under tied weights: its (V, H) matrix is Uᵀ; parameters
    of its own (the class output's `Vc`) are the model's, added to `params`."""

    OWN = ("Vc", "Vb", "Vcb")

    def __init__(self, params: dict):
        self.params = params

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "V":
            return self.params["U"].T
        if key not in self.OWN:
            raise KeyError(key)
        return self.params[key]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if key not in self.OWN:
            raise KeyError(key)
        self.params[key] = value

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(["V", *(key for key in self.OWN if key in self.params)])

    def __len__(self) -> int:
        return len(list(iter(self)))


class GatedLM:
    """A GRU or LSTM language model with the engine's public API (see `rnnexp.engine`).

    Initialisation as PyTorch's word_language_model: U and V uniform in ±0.1, the cells' weights
    uniform in ±1/√H, biases 0 but the LSTM's forget gate at `forget_bias`. Parameters: `U`
    (E, V) column-major, per layer l `<cell><l>_Wx` (kH, in), `_Wh` (kH, H), `_b` (kH) and for
    the GRU `_bhn` (H), and `V` (V, H) unless the weights are tied.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_dim: int = 100,
        cell: str = "lstm",
        layers: int = 1,
        embedding_dim: int | None = None,
        bptt_truncate: int = 4,
        truncation: str = "window",
        dtype: str = "float32",
        forget_bias: float = 1.0,
        dropout: float = 0.0,
        tie_weights: bool = False,
        seed: int | None = None,
        threads: int | None = None,
        output: str = "softmax",
        classes: int | None = None,
        counts: np.ndarray | None = None,
        word_class: np.ndarray | None = None,
        output_bias: bool = False,
    ):
        if cell not in GATED_CELLS:
            raise UserError(f"cell must be one of {', '.join(GATED_CELLS)}, got {cell!r}.")
        if int(vocab_size) < 2 or int(hidden_dim) < 1 or int(layers) < 1:
            raise UserError(
                f"vocab_size must be >= 2, hidden_dim >= 1 and layers >= 1, got {vocab_size}, "
                f"{hidden_dim} and {layers}."
            )
        if int(bptt_truncate) < 0 or (truncation == "chunk" and int(bptt_truncate) < 1):
            raise UserError(f"bptt_truncate must be >= 0 (>= 1 in chunk mode), got {bptt_truncate}.")
        if truncation not in TRUNCATIONS:
            raise UserError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}.")
        if str(dtype) not in DTYPES:
            raise UserError(f"dtype must be float32 or float64, got {dtype!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise UserError(f"dropout must lie in [0, 1), got {dropout}.")
        E = int(embedding_dim) if embedding_dim is not None else int(hidden_dim)
        if E < 1 or (tie_weights and E != int(hidden_dim)):
            raise UserError(f"tied weights need embedding_dim = hidden_dim, got {E} and {hidden_dim}.")
        self.cell, self.layers = cell, int(layers)
        self.V, self.H, self.E = int(vocab_size), int(hidden_dim), E
        self.bptt_truncate, self.truncation = int(bptt_truncate), truncation
        self.dtype = np.dtype(dtype)
        self.dropout, self.tie_weights = float(dropout), bool(tie_weights)
        self.threads = max(1, int(threads if threads is not None else default_threads()))
        self._cell = _LSTM(self.H) if cell == "lstm" else _GRU(self.H)
        self.state_size = self.layers * self.H * (2 if cell == "lstm" else 1)
        self.prefixes = [f"{cell}{l}" for l in range(self.layers)]
        rng = np.random.default_rng(seed)
        self._dropout_seed = int(seed) if seed is not None else int(np.random.default_rng().integers(2**63))

        def uniform(shape, bound):
            return rng.uniform(-bound, bound, shape).astype(self.dtype)

        k, H = self._cell.k, self.H
        self.params = {"U": np.asfortranarray(uniform((E, self.V), EMBEDDING_INIT))}
        for l, prefix in enumerate(self.prefixes):
            self.params[f"{prefix}_Wx"] = uniform((k * H, E if l == 0 else H), 1 / np.sqrt(H))
            self.params[f"{prefix}_Wh"] = uniform((k * H, H), 1 / np.sqrt(H))
            bias = np.zeros(k * H, self.dtype)
            if cell == "lstm":
                bias[H : 2 * H] = forget_bias
            self.params[f"{prefix}_b"] = bias
            if cell == "gru":
                self.params[f"{prefix}_bhn"] = np.zeros(H, self.dtype)
        if not self.tie_weights:
            self.params["V"] = uniform((self.V, H), EMBEDDING_INIT)
        weights = _TiedOutput(self.params) if self.tie_weights else self.params
        # softmax, or the class-based one (from the training `counts`, or a checkpoint's `word_class`)
        self.output = make_output(
            output, weights, "V", self.threads, rng, classes, counts, word_class, output_bias
        )
        self._threads = _Threads(self.threads)

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Arrays that are not trained but that a checkpoint must keep: the output layer's (none for softmax)."""
        return self.output.buffers

    def _layer_params(self, l: int) -> dict:
        prefix = self.prefixes[l]
        return {name[len(prefix) + 1 :]: value for name, value in self.params.items() if name.startswith(prefix + "_")}

    # ------------------------------------------------------------------ checks
    def _check(self, x, y=None, mask=None, h0=None):
        return check_batch(x, y, mask, h0, self.V, self.state_size, self.dtype, f"the {self.cell}'s whole state")

    # ---------------------------------------------------------------- dropout
    def dropout_masks(self, x, y, mask=None, h0=None) -> DropoutMasks | None:
        """The masks `backprop` draws for this batch now; None without dropout.

        They are a pure function of the model's seed, the batch, the carried state and the cells'
        current parameters, which every update changes and every checkpoint restores bitwise: a
        resumed run draws the same masks as the uninterrupted one, and no generator's state is
        consumed, so extra calls (the diagnostics') change nothing that follows.
        """
        if self.dropout == 0.0:
            return None
        x, y, mask, h0 = self._check(x, y, mask, h0)
        digest = hashlib.sha256()
        for part in (x, y, mask, h0):
            digest.update(b"-" if part is None else np.ascontiguousarray(part).tobytes())
        for name, value in self.params.items():
            if name not in ("U", "V"):
                digest.update(value.tobytes() if value.ndim == 1 else np.float64(value.sum(dtype=np.float64)).tobytes())
        words = np.frombuffer(digest.digest(), dtype=np.uint32)
        rng = np.random.default_rng([self._dropout_seed, *words.tolist()])
        T, B = x.shape[1], x.shape[0]
        scale = self.dtype.type(1.0 / (1.0 - self.dropout))

        def draw(size):
            return (rng.random((T, B, size), dtype=np.float32) >= self.dropout).astype(self.dtype) * scale

        return DropoutMasks([draw(self.E if l == 0 else self.H) for l in range(self.layers)], draw(self.H))

    def _check_masks(self, masks: DropoutMasks, T: int, B: int) -> None:
        shapes = [m.shape for m in (*masks.inputs, masks.output)]
        expected = [(T, B, self.E if l == 0 else self.H) for l in range(self.layers)] + [(T, B, self.H)]
        if shapes != expected:
            raise UserError(f"dropout masks must have the shapes {expected}, got {shapes}.")

    # ---------------------------------------------------------------- forward
    def _forward(
        self, x: np.ndarray, h0: np.ndarray | None, masks: DropoutMasks | None, backward: bool
    ) -> tuple[list[_Layer], np.ndarray]:
        """Every layer over all steps, and the top states as the output layer sees them (T, B, H)."""
        T, B = x.shape[1], x.shape[0]
        H, cell = self.H, self._cell
        inputs = np.take(self.params["U"].T, x.T, axis=0)  # (T, B, E): the embeddings, without one-hot
        layers = []
        for l in range(self.layers):
            if masks is not None:
                inputs = inputs * masks.inputs[l]
            p = self._layer_params(l)
            if h0 is None:
                hl = np.zeros((B, H), self.dtype)
                cl = np.zeros((B, H), self.dtype) if cell.k == 4 else None
            elif cell.k == 4:
                hl, cl = h0[:, 2 * l * H : (2 * l + 1) * H], h0[:, (2 * l + 1) * H : (2 * l + 2) * H]
            else:
                hl, cl = h0[:, l * H : (l + 1) * H], None
            layer = _Layer(
                inputs,
                np.ascontiguousarray(hl),
                None if cl is None else np.ascontiguousarray(cl),
                np.empty((T, B, H), self.dtype),
            )
            cell.forward(p, layer, backward, self._threads)
            layers.append(layer)
            inputs = layer.h
        top = layers[-1].h if masks is None else layers[-1].h * masks.output
        return layers, top

    def _last_state(self, layers: list[_Layer], lengths: np.ndarray) -> np.ndarray:
        rows, at = np.arange(len(lengths)), lengths - 1
        parts = []
        for layer in layers:
            parts.append(layer.h[at, rows])
            if layer.c is not None:
                parts.append(layer.c[at, rows])
        return np.concatenate(parts, axis=1)

    # --------------------------------------------------------------- backward
    def _backward_full(self, layers: list[_Layer], ext: np.ndarray, masks: DropoutMasks | None) -> list[tuple]:
        """Full BPTT over the whole sequence, layer after layer from the top."""
        cell, T, B = self._cell, ext.shape[0], ext.shape[1]
        accs: list[tuple] = [()] * self.layers
        for l in reversed(range(self.layers)):
            p, layer = self._layer_params(l), layers[l]
            acc = accs[l] = cell.new_acc(T, B, self.dtype, zero=False)
            self._back_steps(p, layer, ext, acc)
            if l:
                ext = self._input_grad(l, acc).reshape(T, B, self.H)
                if masks is not None:
                    ext *= masks.inputs[l]
        return accs

    def _back_steps(self, p: dict, layer: _Layer, ext: np.ndarray, acc: tuple) -> None:
        """The backward time loop of one layer: its pre-activation gradients into `acc`."""
        cell, T = self._cell, ext.shape[0]
        dh = np.empty_like(ext[0])
        rec, dc = None, None
        for t in range(T - 1, -1, -1):
            if rec is None:
                np.copyto(dh, ext[t])
            else:
                np.add(ext[t], rec, out=dh)
            grads, dc = cell.back(layer, t, dh, dc, out=tuple(a[t] for a in acc))
            if t:
                rec = cell.recurrent(p, layer, t, dh, grads)

    def _input_grad(self, l: int, acc: tuple) -> np.ndarray:
        """dL/d(layer l's input) for every step, (T·B, in), rows split among the threads."""
        flat = tuple(a.reshape(-1, a.shape[-1]) for a in acc)
        p = self._layer_params(l)
        out = np.empty((flat[0].shape[0], p["Wx"].shape[1]), self.dtype)

        def block(r0: int, r1: int) -> Callable[[], None]:
            def task() -> None:
                self._cell.input_grad(p, tuple(a[r0:r1] for a in flat), out=out[r0:r1])

            return task

        self._threads.run([block(r0, r1) for r0, r1 in self._threads.row_blocks(out.shape[0])])
        return out

    def _push(
        self,
        layers: list[_Layer],
        ext: np.ndarray,
        depth: int,
        masks: DropoutMasks | None,
        accs: list[tuple] | None,
        visit=None,
    ) -> None:
        """Every output's error pushed back `depth` steps, one depth at a time for all steps at once.

        At depth j the error of output t sits at step t - j (steps 0..T-1-j). With `accs`, each
        layer's pre-activation gradients are summed into them; `visit(j, rec)` sees, for j >= 1,
        each layer's (dL/dh, dL/dc) of the state at step t - j before that step's own gates.
        """
        cell, T = self._cell, ext.shape[0]
        rec: list[tuple] = [(None, None)] * self.layers
        for j in range(depth + 1):
            n = T - j
            at = slice(0, n)
            if visit is not None and j:
                visit(j, rec)
            if j == depth and accs is None:
                return
            above = ext[at] if j == 0 else None
            pushed: list[tuple] = [(None, None)] * self.layers
            for l in reversed(range(self.layers)):
                p, layer = self._layer_params(l), layers[l]
                dh_rec, dc_rec = rec[l]
                dh = above if dh_rec is None else (dh_rec if above is None else dh_rec + above)
                assert dh is not None  # the top layer's error at depth 0, else the step after's
                grads, dc = cell.back(layer, at, dh, dc_rec)
                if accs is not None:
                    for acc, g in zip(accs[l], grads):
                        acc[at] += g
                if j < depth:
                    pushed[l] = (cell.recurrent(p, layer, at, dh, grads)[1:], None if dc is None else dc[1:])
                if l:
                    above = cell.input_grad(p, grads)
                    if masks is not None:
                        above *= masks.inputs[l][at]
            rec = pushed

    @blas_single_threaded
    def backprop(
        self,
        x,
        y,
        mask=None,
        h0=None,
        reduction: str = "mean",
        sparse_u: bool = False,
        dropout: DropoutMasks | None = None,
    ) -> Step:
        """Loss and exact gradients for a sentence or a padded (B, T) batch, with dropout when set.

        `dropout` fixes the masks (as `dropout_masks` returns them); by default they are drawn.
        With tied weights U's gradient is dense whatever `sparse_u` says: the output layer's
        share of it touches every column.
        """
        x, y, mask, h0 = self._check(x, y, mask, h0)
        if reduction not in ("mean", "sum"):
            raise UserError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
        B, T = x.shape
        m = np.ones((T, B), self.dtype) if mask is None else mask.T.astype(self.dtype)
        n_tokens = int(m.sum())
        if n_tokens == 0:
            raise UserError("the batch has no real token: every mask row is empty.")
        weights = (m / n_tokens if reduction == "mean" else m).reshape(-1)
        masks = self.dropout_masks(x, y, mask, h0) if dropout is None else dropout
        if masks is not None:
            self._check_masks(masks, T, B)

        layers, top = self._forward(x, h0, masks, backward=True)
        nll, dS, output_grads = self.output.nll_grads(top.reshape(T * B, self.H), y.T.reshape(-1), weights, True)
        dV = output_grads.pop("V")
        loss = float(nll @ m.reshape(-1)) / n_tokens
        if not np.isfinite(loss):
            raise DivergedError(f"the loss became {loss}: lower the learning rate or clip gradients.")
        ext = dS.reshape(T, B, self.H)
        if masks is not None:
            ext *= masks.output
        depth = T - 1 if self.truncation != "window" else min(self.bptt_truncate, T - 1)
        if depth == T - 1:
            accs = self._backward_full(layers, ext, masks)
        else:
            accs = [self._cell.new_acc(T, B, self.dtype, zero=True) for _ in range(self.layers)]
            self._push(layers, ext, depth, masks, accs)

        grads: dict = output_grads  # the output layer's own besides V (the class output's Vc)
        tasks = [
            task
            for l, prefix in enumerate(self.prefixes)
            for task in self._cell.weight_tasks(layers[l], accs[l], prefix, grads)
        ]
        self._threads.run(tasks)
        d_embed = self._input_grad(0, accs[0])
        if masks is not None:
            d_embed *= masks.inputs[0].reshape(T * B, self.E)
        columns = column_grad(x.T.reshape(-1), d_embed, m.reshape(-1) > 0)
        if self.tie_weights:
            dV[columns.cols] += columns.rows  # dV is the gradient of Uᵀ: one dense (V, E) array
            grads["U"] = dV.T
        else:
            grads["U"] = columns if sparse_u else columns.toarray(self.V)
            grads["V"] = dV
        lengths = m.sum(axis=0).astype(int)
        return Step(loss, n_tokens, {name: grads[name] for name in self.params}, self._last_state(layers, lengths))

    def loss_and_grads(self, x, y, mask=None) -> tuple[float, dict]:
        """Mean loss and dense gradients of it: the notebook-friendly form of `backprop`."""
        step = self.backprop(x, y, mask)
        return step.loss, step.grads

    # ------------------------------------------------------------- inference
    @blas_single_threaded
    def hidden_states(self, x, h0=None) -> np.ndarray:
        """The top layer's state after every input, (B, T, H)."""
        x, _, _, h0 = self._check(x, h0=h0)
        layers, _ = self._forward(x, h0, None, backward=False)
        return np.ascontiguousarray(layers[-1].h.transpose(1, 0, 2))

    @blas_single_threaded
    def gradient_decay(self, x, y, mask=None, max_depth: int = 20) -> np.ndarray:
        """Mean ||∂L_t/∂state_{t-k}|| over the real outputs t with t-k >= 0, for k = 0..max_depth (NaN where none).

        The state is the whole carried state (every layer's h, and c for the LSTM); the chain is
        the full one whatever the training truncation, without dropout.
        """
        x, y, mask, _ = self._check(x, y, mask)
        B, T = x.shape
        real = np.ones((T, B), bool) if mask is None else mask.T
        layers, top = self._forward(x, None, None, backward=True)
        _, dS, _ = self.output.nll_grads(
            top.reshape(T * B, self.H), y.T.reshape(-1), real.reshape(-1).astype(self.dtype), need_grads=True
        )
        ext = dS.reshape(T, B, self.H)
        decay = np.full(max_depth + 1, np.nan)
        if real.any():
            decay[0] = float(np.linalg.norm(ext, axis=2)[real].mean())

        def visit(k: int, rec: list[tuple]) -> None:
            sq = sum((part * part).sum(axis=2) for pair in rec for part in pair if part is not None)
            outputs = real[k:]
            if outputs.any():
                decay[k] = float(np.sqrt(sq)[outputs].mean())

        self._push(layers, ext, min(max_depth, T - 1), None, None, visit)
        return decay

    @blas_single_threaded
    def token_nll(self, x, y, mask=None, h0=None) -> tuple[np.ndarray, np.ndarray]:
        """Per-token negative log-likelihood (B, T), 0 where masked, and the state after the last real token."""
        x, y, mask, h0 = self._check(x, y, mask, h0)
        B, T = x.shape
        layers, top = self._forward(x, h0, None, backward=False)
        nll, _, _ = self.output.nll_grads(top.reshape(T * B, self.H), y.T.reshape(-1), None, need_grads=False)
        nll = nll.reshape(T, B).T
        lengths = np.full(B, T) if mask is None else mask.sum(axis=1)
        if mask is not None:
            nll = np.where(mask, nll, 0.0)
        return nll, self._last_state(layers, lengths)

    def loss(self, x, y, mask=None) -> float:
        """Mean negative log-likelihood per real token."""
        nll, _ = self.token_nll(x, y, mask)
        n = nll.size if mask is None else int(np.asarray(mask, bool).sum())
        return float(nll.sum()) / n

    @blas_single_threaded
    def predict(self, x) -> np.ndarray:
        """The most probable next word after every position, shaped like x."""
        squeeze = np.asarray(x).ndim == 1
        x, _, _, _ = self._check(x)
        layers, top = self._forward(x, None, None, backward=False)
        ids = np.argmax(self.output.logits(top), axis=2).T
        return ids[0] if squeeze else ids

    def sample(
        self,
        rng: np.random.Generator,
        start_id: int,
        end_id: int | None,
        unknown_id: int | None = None,
        max_len: int = 50,
        temperature: float = 1.0,
        top_k: int | None = None,
        prefix: Sequence[int] = (),
    ) -> list[int]:
        """Sample a sentence word by word, never the unknown token, until `end_id` or `max_len`.

        With a `prefix` (the words after the start token), the model reads it first and samples its
        continuation, which is what is returned.
        """
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, got {temperature}.")
        state = np.zeros((1, self.state_size), self.dtype)
        word, out = int(start_id), list[int]()
        if len(prefix):
            read = np.array([[word, *prefix[:-1]]])
            state = self._last_state(self._forward(read, state, None, backward=False)[0], np.array([read.shape[1]]))
            word = int(prefix[-1])
        banned = [i for i in (unknown_id, start_id) if i is not None]
        while len(out) < max_len:
            layers, top = self._forward(np.array([[word]]), state, None, backward=False)
            state = self._last_state(layers, np.ones(1, int))
            word = draw_word(self.output.logits(top[0, 0]), rng, banned, temperature, top_k)
            if word == end_id:
                break
            out.append(word)
        return out
