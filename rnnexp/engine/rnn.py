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
word embeddings, are contiguous (see ARCHITECTURE.md, "Speed of the engine").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.grads import column_grad
from rnnexp.engine.model import Inference, LanguageModel, Step
from rnnexp.engine.outputs import make_output
from rnnexp.engine.threads import blas_single_threaded


class RNNLM(LanguageModel):
    """The tutorial's model: no biases, uniform init in ±1/√n for n incoming connections.

    Parameters: `U` (H, V) column-major, `W` (H, H), `V` (V, H), and the output layer's own.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        seed: int | None,
        threads: int,
        counts: np.ndarray | None,
        word_class: np.ndarray | None,
    ):
        super().__init__(cfg, vocab_size, threads)
        self.state_size = self.H
        rng = np.random.default_rng(seed)

        def uniform(shape, fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(self.dtype)

        V, H = self.vocab_size, self.H
        self.params = {
            "U": np.asfortranarray(uniform((H, V), V)),
            "W": uniform((H, H), H),
            "V": uniform((V, H), H),
        }
        # softmax, or the class-based one (from the training `counts`, or a checkpoint's `word_class`)
        self.output = make_output(
            cfg.output, self.params, "V", self._pool, rng, cfg.classes, counts, word_class, cfg.output_bias
        )

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

    def _inference(self, x: np.ndarray, h0: np.ndarray | None) -> Inference:
        S = self._states(x, h0)
        return Inference(S, lambda lengths: S[lengths - 1, np.arange(x.shape[0])])

    # --------------------------------------------------------------- backward
    def _backprop_time(self, dA: np.ndarray, dtanh: np.ndarray) -> np.ndarray:
        """Total gradient at each pre-activation, (T, B, H), from dL/da_t of each output's own step."""
        W = self.params["W"]
        T = dtanh.shape[0]
        depth = self._depth(T)
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
        batch = self._batch(x, y, mask, h0, reduction)
        x, m = batch.x, batch.real
        B, T = x.shape
        S = self._states(x, batch.h0)
        Sf = S.reshape(T * B, self.H)
        nll, dS, output_grads = self.output.nll_grads(Sf, batch.y.T.reshape(-1), batch.weights, need_grads=True)
        loss = self._mean_loss(nll, batch)
        dA = dS.reshape(T, B, self.H)
        dtanh = 1.0 - S * S
        dA *= dtanh
        G = self._backprop_time(dA, dtanh)

        S_prev = np.empty_like(S)
        S_prev[0] = 0.0 if batch.h0 is None else batch.h0
        S_prev[1:] = S[:-1]
        Gf = G.reshape(T * B, self.H)
        dW = Gf.T @ S_prev.reshape(T * B, self.H)
        dU = column_grad(x.T.reshape(-1), Gf, m.reshape(-1) > 0)
        grads = {"U": dU if sparse_u else dU.toarray(self.vocab_size), "W": dW, **output_grads}
        h_last = S[m.sum(axis=0).astype(int) - 1, np.arange(B)]
        return Step(loss, batch.n_tokens, grads, h_last)

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

    def _sampling_start(self, start_id: int, prefix: Sequence[int]) -> tuple[np.ndarray, int]:
        h, word = np.zeros(self.H, self.dtype), start_id
        for given in prefix:
            h = self._read(h, word)
            word = int(given)
        return h, word

    def _sampling_step(self, state: np.ndarray, word: int) -> tuple[np.ndarray, np.ndarray]:
        h = self._read(state, word)
        return h, self.output.logits(h)

    def _read(self, h: np.ndarray, word: int) -> np.ndarray:
        """One step of one sequence, h a vector: the sampler's recurrence."""
        return np.tanh(self.params["U"].T[word] + self.params["W"] @ h)
