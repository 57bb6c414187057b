"""What every model shares: its config, the output layer, the batch checks, and the public API built
on two passes a model supplies, `_inference` (the top states and the carried state) and the
sampler's `_sampling_start` / `_sampling_step`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.grads import ColumnGrad
from rnnexp.engine.inputs import check_batch, draw_word
from rnnexp.engine.outputs import OutputLayer
from rnnexp.engine.threads import WorkerPool, blas_single_threaded
from rnnexp.errors import DivergedError, UserError


@dataclass
class Step:
    """The result of one forward and backward pass."""

    loss: float  # mean negative log-likelihood per real token
    n_tokens: int
    grads: dict[str, np.ndarray | ColumnGrad]  # one per parameter; 'U' a ColumnGrad with sparse_u
    h_last: np.ndarray  # (B, state_size): the carried state after each sequence's last real token


@dataclass
class Batch:
    """A checked training batch, time-major, with each output's weight in the loss."""

    x: np.ndarray  # (B, T) token ids
    y: np.ndarray  # (B, T) targets
    mask: np.ndarray | None  # (B, T) bool, real tokens as a prefix of each row
    h0: np.ndarray | None  # (B, state_size) carried state
    real: np.ndarray  # (T, B) 1 for a real token, 0 for padding, in the model's dtype
    n_tokens: int
    weights: np.ndarray  # (T·B,) each output's weight: real / n_tokens (mean) or real (sum)


@dataclass
class Inference:
    """A forward pass without dropout: the states the output layer reads, and the carried state."""

    top: np.ndarray  # (T, B, H)
    state_after: Callable[[np.ndarray], np.ndarray]  # lengths (B,) -> (B, state_size) after each row's last token


class LanguageModel(ABC):
    """The public API (see `rnnexp.engine`) over a model's own passes. A subclass sets `params`,
    `output` and `state_size`, and implements `backprop`, `hidden_states`, `gradient_decay`,
    `_inference`, `_sampling_start` and `_sampling_step`."""

    params: dict[str, np.ndarray]
    output: OutputLayer
    state_size: int  # width of the carried state h0 / h_last

    def __init__(self, cfg: ModelConfig, vocab_size: int, threads: int):
        self.vocab_size, self.H = int(vocab_size), int(cfg.hidden_dim)
        self.bptt_truncate, self.truncation = int(cfg.bptt_truncate), cfg.truncation
        self.dtype = np.dtype(cfg.dtype)
        self.threads = threads
        self._pool = WorkerPool(threads)

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Arrays that are not trained but that a checkpoint must keep: the output layer's (class: `word_class`)."""
        return self.output.buffers

    def _check(self, x, y=None, mask=None, h0=None):
        return check_batch(x, y, mask, h0, self.vocab_size, self.state_size, self.dtype, self._state_hint())

    def _state_hint(self) -> str:
        """What h0's shape error adds after the expected shape (nothing for a single-state model)."""
        return ""

    def _batch(self, x, y, mask, h0, reduction: str) -> Batch:
        """The start of every backward pass: checks, and each output's weight in the loss."""
        x, y, mask, h0 = self._check(x, y, mask, h0)
        if reduction not in ("mean", "sum"):
            raise UserError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
        B, T = x.shape
        real = np.ones((T, B), self.dtype) if mask is None else mask.T.astype(self.dtype)
        n_tokens = int(real.sum())
        if n_tokens == 0:
            raise UserError("the batch has no real token: every mask row is empty.")
        weights = (real / n_tokens if reduction == "mean" else real).reshape(-1)
        return Batch(x, y, mask, h0, real, n_tokens, weights)

    @staticmethod
    def _mean_loss(nll: np.ndarray, batch: Batch) -> float:
        """The batch's mean NLL per real token; a DivergedError if it is not finite."""
        loss = float(nll @ batch.real.reshape(-1)) / batch.n_tokens
        if not np.isfinite(loss):
            raise DivergedError(f"the loss became {loss}: lower the learning rate or clip gradients.")
        return loss

    def _depth(self, T: int) -> int:
        """Steps an output's error flows back: the window, or the whole sequence (full, chunk)."""
        return T - 1 if self.truncation != "window" else min(self.bptt_truncate, T - 1)

    @abstractmethod
    def backprop(self, x, y, mask=None, h0=None, reduction: str = "mean", sparse_u: bool = False) -> Step:
        """Loss and exact gradients for a sentence or a padded (B, T) batch."""

    @abstractmethod
    def hidden_states(self, x, h0=None) -> np.ndarray:
        """The (top layer's) state after every input, (B, T, H)."""

    @abstractmethod
    def gradient_decay(self, x, y, mask=None, max_depth: int = 20) -> np.ndarray:
        """Mean ||∂L_t/∂state_{t-k}|| over the real outputs t with t-k >= 0, for k = 0..max_depth (NaN where none)."""

    def loss_and_grads(self, x, y, mask=None) -> tuple[float, dict]:
        """Mean loss and dense gradients of it: the notebook-friendly form of `backprop`."""
        step = self.backprop(x, y, mask)
        return step.loss, step.grads

    @abstractmethod
    def _inference(self, x: np.ndarray, h0: np.ndarray | None) -> Inference:
        """The forward pass without dropout."""

    @blas_single_threaded
    def token_nll(self, x, y, mask=None, h0=None) -> tuple[np.ndarray, np.ndarray]:
        """Per-token negative log-likelihood (B, T), 0 where masked, and the state after the last real token."""
        x, y, mask, h0 = self._check(x, y, mask, h0)
        B, T = x.shape
        run = self._inference(x, h0)
        nll, _, _ = self.output.nll_grads(run.top.reshape(T * B, self.H), y.T.reshape(-1), None, need_grads=False)
        nll = nll.reshape(T, B).T
        lengths = np.full(B, T) if mask is None else mask.sum(axis=1)
        if mask is not None:
            nll = np.where(mask, nll, 0.0)
        return nll, run.state_after(lengths)

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
        ids = np.argmax(self.output.logits(self._inference(x, None).top), axis=2).T
        return ids[0] if squeeze else ids

    @abstractmethod
    def _sampling_start(self, start_id: int, prefix: Sequence[int]) -> tuple[np.ndarray, int]:
        """The state after reading the start token and `prefix` but its last word, and that word."""

    @abstractmethod
    def _sampling_step(self, state: np.ndarray, word: int) -> tuple[np.ndarray, np.ndarray]:
        """(the state after reading `word`, the logits of the next word)."""

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
        state, word = self._sampling_start(int(start_id), prefix)
        banned = [i for i in (unknown_id, start_id) if i is not None]
        out = list[int]()
        while len(out) < max_len:
            state, logits = self._sampling_step(state, word)
            word = draw_word(logits, rng, banned, temperature, top_k)
            if word == end_id:
                break
            out.append(word)
        return out
