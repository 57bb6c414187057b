"""The tutorial's RNN language model, vectorised over batch and time, with exact truncated BPTT.

    s_t = tanh(U x_t + W s_{t-1}),   o_t = softmax(V s_t),   L = mean_t -log o_t[y_t]

Three truncation modes, all exact:
- ``window`` (the tutorial's): the error of output t flows back through at most `bptt_truncate`
  earlier steps. Instead of the tutorial's double loop, the deltas of all outputs are pushed back
  one depth at a time: depth j costs one (N×H)·(H×H) product for every time step at once.
- ``full``: ordinary backpropagation through the whole sequence.
- ``chunk``: the caller feeds a stream chunk by chunk with the carried hidden state `h0`; the
  gradient stops at the chunk border (full BPTT inside the chunk).

Internally arrays are time-major, (T, B, H). U is stored column-major so that its columns, the
word embeddings, are contiguous: gathering them for a batch and updating only the columns a batch
touched (`ColumnGrad`) both read contiguous memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnexp.config.schema import DTYPES, TRUNCATIONS
from rnnexp.engine.class_output import make_output
from rnnexp.engine.grads import column_grad
from rnnexp.engine.inputs import check_batch, draw_word
from rnnexp.engine.threads import blas_single_threaded, default_threads
from rnnexp.errors import DivergedError, UserError


@dataclass
class Step:
    """The result of one forward and backward pass."""

    loss: float  # mean negative log-likelihood per real token
    n_tokens: int
    grads: dict  # 'U' (array or ColumnGrad), 'W', and the output layer's: 'V' ('V' and 'Vc' for output=class)
    h_last: np.ndarray  # (B, H) hidden state after each sequence's last real token


class RNNLM:
    """The tutorial's model: no biases, uniform init in ±1/√n for n incoming connections."""

    def __init__(
        self,
        vocab_size: int,
        hidden_dim: int = 100,
        bptt_truncate: int = 4,
        truncation: str = "window",
        dtype: str = "float64",
        seed: int | None = None,
        threads: int | None = None,
        output: str = "softmax",
        classes: int | None = None,
        counts: np.ndarray | None = None,
        word_class: np.ndarray | None = None,
        output_bias: bool = False,
    ):
        if int(vocab_size) < 2 or int(hidden_dim) < 1:
            raise UserError(f"vocab_size must be >= 2 and hidden_dim >= 1, got {vocab_size} and {hidden_dim}.")
        if int(bptt_truncate) < 0 or (truncation == "chunk" and int(bptt_truncate) < 1):
            raise UserError(f"bptt_truncate must be >= 0 (>= 1 in chunk mode), got {bptt_truncate}.")
        if truncation not in TRUNCATIONS:
            raise UserError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}.")
        if str(dtype) not in DTYPES:
            raise UserError(f"dtype must be float32 or float64, got {dtype!r}.")
        self.V, self.H = int(vocab_size), int(hidden_dim)
        self.bptt_truncate, self.truncation = int(bptt_truncate), truncation
        self.dtype = np.dtype(dtype)
        self.threads = max(1, int(threads if threads is not None else default_threads()))
        rng = np.random.default_rng(seed)

        def uniform(shape, fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(self.dtype)

        self.params = {
            "U": np.asfortranarray(uniform((self.H, self.V), self.V)),
            "W": uniform((self.H, self.H), self.H),
            "V": uniform((self.V, self.H), self.H),
        }
        # softmax, or the class-based one (from the training `counts`, or a checkpoint's `word_class`)
        self.output = make_output(
            output, self.params, "V", self.threads, rng, classes, counts, word_class, output_bias
        )

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Arrays that are not trained but that a checkpoint must keep to rebuild the model (the word classes)."""
        return self.output.buffers

    # ------------------------------------------------------------------ checks
    def _check(self, x, y=None, mask=None, h0=None):
        return check_batch(x, y, mask, h0, self.V, self.H, self.dtype)

    # ---------------------------------------------------------------- forward
    def _states(self, x: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
        """Hidden states, time-major (T, B, H); the input term is a gather of U's columns."""
        U_t, W = self.params["U"].T, self.params["W"]
        T, B = x.shape[1], x.shape[0]
        S = np.take(U_t, x.T, axis=0)  # (T, B, H): U x_t for every t, no one-hot
        h = np.zeros((B, self.H), self.dtype) if h0 is None else h0
        tmp = np.empty((B, self.H), self.dtype)
        for t in range(T):
            np.matmul(h, W.T, out=tmp)
            tmp += S[t]
            np.tanh(tmp, out=S[t])
            h = S[t]
        return S

    # --------------------------------------------------------------- backward
    def _backprop_time(self, dA: np.ndarray, dtanh: np.ndarray) -> np.ndarray:
        """Total gradient at each pre-activation, (T, B, H), from dL/da_t of each output's own step."""
        W = self.params["W"]
        T = dtanh.shape[0]
        depth = T - 1 if self.truncation != "window" else min(self.bptt_truncate, T - 1)
        if depth == T - 1:  # full recurrence: T small products
            G = dA
            for i in range(T - 2, -1, -1):
                G[i] += (G[i + 1] @ W) * dtanh[i]
            return G
        G = dA.copy()  # window: push every output's delta back one depth at a time
        P = dA
        for j in range(1, depth + 1):
            P = (P[1:] @ W) * dtanh[: T - j]
            G[: T - j] += P
        return G

    @blas_single_threaded
    def backprop(self, x, y, mask=None, h0=None, reduction: str = "mean", sparse_u: bool = False) -> Step:
        """Loss and exact gradients for a sentence or a padded (B, T) batch."""
        x, y, mask, h0 = self._check(x, y, mask, h0)
        if reduction not in ("mean", "sum"):
            raise UserError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
        B, T = x.shape
        m = np.ones((T, B), self.dtype) if mask is None else mask.T.astype(self.dtype)
        n_tokens = int(m.sum())
        if n_tokens == 0:
            raise UserError("the batch has no real token: every mask row is empty.")
        weights = (m / n_tokens if reduction == "mean" else m).reshape(-1)

        S = self._states(x, h0)
        Sf = S.reshape(T * B, self.H)
        nll, dS, output_grads = self.output.nll_grads(Sf, y.T.reshape(-1), weights, need_grads=True)
        loss = float(nll @ m.reshape(-1)) / n_tokens
        if not np.isfinite(loss):
            raise DivergedError(f"the loss became {loss}: lower the learning rate or clip gradients.")
        dA = dS.reshape(T, B, self.H)
        dtanh = 1.0 - S * S
        dA *= dtanh
        G = self._backprop_time(dA, dtanh)

        S_prev = np.empty_like(S)
        S_prev[0] = 0.0 if h0 is None else h0
        S_prev[1:] = S[:-1]
        Gf = G.reshape(T * B, self.H)
        dW = Gf.T @ S_prev.reshape(T * B, self.H)
        dU = column_grad(x.T.reshape(-1), Gf, m.reshape(-1) > 0)
        grads = {"U": dU if sparse_u else dU.toarray(self.V), "W": dW, **output_grads}
        h_last = S[m.sum(axis=0).astype(int) - 1, np.arange(B)]
        return Step(loss, n_tokens, grads, h_last)

    def loss_and_grads(self, x, y, mask=None) -> tuple[float, dict]:
        """Mean loss and dense gradients of it: the notebook-friendly form of `backprop`."""
        step = self.backprop(x, y, mask)
        return step.loss, step.grads

    # ------------------------------------------------------------- inference
    @blas_single_threaded
    def hidden_states(self, x, h0=None) -> np.ndarray:
        """The hidden state after every input, (B, T, H)."""
        x, _, _, h0 = self._check(x, h0=h0)
        return np.ascontiguousarray(self._states(x, h0).transpose(1, 0, 2))

    @blas_single_threaded
    def gradient_decay(self, x, y, mask=None, max_depth: int = 20) -> np.ndarray:
        """Mean ||∂L_t/∂s_{t-k}|| over the real outputs t with t-k >= 0, for k = 0..max_depth (NaN where none).

        The full, untruncated chain whatever the training truncation: it shows how far back the
        error could reach. Depth k costs one (N×H)·(H×H) product.
        """
        x, y, mask, _ = self._check(x, y, mask)
        B, T = x.shape
        real = np.ones((T, B), bool) if mask is None else mask.T
        S = self._states(x, None)
        weights = real.reshape(-1).astype(self.dtype)  # unscaled: each output's own loss
        _, dS, _ = self.output.nll_grads(S.reshape(T * B, self.H), y.T.reshape(-1), weights, need_grads=True)
        dtanh = 1.0 - S * S
        Q = dS.reshape(T, B, self.H)  # Q[i] = ∂L_{i+k}/∂s_i at depth k
        W = self.params["W"]
        decay = np.full(max_depth + 1, np.nan)
        for k in range(min(max_depth, T - 1) + 1):
            if k > 0:
                Q = (Q[1:] * dtanh[1 : T - k + 1]) @ W
            outputs = real[k:]
            if outputs.any():
                decay[k] = float(np.linalg.norm(Q, axis=2)[outputs].mean())
        return decay

    @blas_single_threaded
    def token_nll(self, x, y, mask=None, h0=None) -> tuple[np.ndarray, np.ndarray]:
        """Per-token negative log-likelihood (B, T), 0 where masked, and the last hidden state."""
        x, y, mask, h0 = self._check(x, y, mask, h0)
        B, T = x.shape
        S = self._states(x, h0)
        nll, _, _ = self.output.nll_grads(S.reshape(T * B, self.H), y.T.reshape(-1), None, need_grads=False)
        nll = nll.reshape(T, B).T
        lengths = np.full(B, T) if mask is None else mask.sum(axis=1)
        if mask is not None:
            nll = np.where(mask, nll, 0.0)
        return nll, S[lengths - 1, np.arange(B)]

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
        S = self._states(x, None)
        ids = np.argmax(self.output.logits(S), axis=2).T
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
        U_t, W = self.params["U"].T, self.params["W"]
        h = np.zeros(self.H, self.dtype)
        word, out = int(start_id), list[int]()
        for given in prefix:
            h = np.tanh(U_t[word] + W @ h)
            word = int(given)
        banned = [i for i in (unknown_id, start_id) if i is not None]
        while len(out) < max_len:
            h = np.tanh(U_t[word] + W @ h)
            word = draw_word(self.output.logits(h), rng, banned, temperature, top_k)
            if word == end_id:
                break
            out.append(word)
        return out
