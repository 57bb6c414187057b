"""Mikolov's class-based softmax, exact and normalised, and `make_output`, which builds any output layer.

    P(w | s) = P(c(w) | s) · P(w | c(w), s)
    P(c | s) = softmax(Vc s)_c,   P(w | c, s) = softmax of V s over the words of class c

Words are binned into classes by unigram frequency of the training data as in Mikolov's rnnlm
(words by descending count, each class taking about 1/C of the total mass), so a token costs
C + |c(w)| dot products instead of V: about 2·√V at the default C = round(√V).

A batch's rows are grouped by the class of their target: for each class present, one small
(rows × |c|) softmax over the class's words, whose gradients land on rows of dS and of dV that no
other class touches. It runs in the calling thread: its products are small, so worker threads only
contend for the GIL (two workers measured 1.2-1.8× slower than one, V = 8k to 100k), and the
result is the same bitwise whatever the thread count.

The class assignment is part of the model: `buffers["word_class"]` is stored in every checkpoint,
so generation, evaluation and resumed runs use the assignment the model was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

import numpy as np

from rnnexp.engine.output import SoftmaxOutput
from rnnexp.errors import UserError


def default_classes(vocab_size: int) -> int:
    """round(√V): the class count that balances the class softmax against the word softmax."""
    return max(1, round(math.sqrt(vocab_size)))


def frequency_classes(counts: np.ndarray, n_classes: int) -> np.ndarray:
    """Mikolov's frequency binning: word -> class id, classes 0.. in order of falling frequency.

    Words sorted by count (ties by id) fill class a until the cumulative unigram mass passes
    (a+1)/C; a class never stays empty, since the class index moves on by at most one per word.
    """
    counts = np.asarray(counts, dtype=np.float64)
    V = len(counts)
    if not 1 <= n_classes <= V:
        raise UserError(f"model.classes must lie between 1 and the vocabulary size {V}, got {n_classes}.")
    total = counts.sum()
    if total <= 0:
        raise UserError("the class-based softmax needs word counts from the training data, and they are all zero.")
    order = np.argsort(-counts, kind="stable")
    word_class = np.empty(V, np.int64)
    mass, a = 0.0, 0
    for word in order.tolist():
        mass = min(1.0, mass + counts[word] / total)
        word_class[word] = a
        if mass > (a + 1) / n_classes and a < n_classes - 1:
            a += 1
    return word_class


class ClassOutput:
    """Class-based softmax NLL of many rows: params[key] is V (V, H), params[key + "c"] the class weights (C, H)."""

    def __init__(self, params: Mapping[str, np.ndarray], key: str, word_class: np.ndarray):
        self.params, self.key, self.class_key = params, key, key + "c"
        self.vocab_size, self.hidden_dim = params[key].shape
        self.dtype = params[key].dtype
        self.word_class = np.ascontiguousarray(word_class, dtype=np.int64)
        self.n_classes = params[self.class_key].shape[0]
        # the biases (words' and classes'), present only when the model has an output bias
        self.bias_key = key + "b" if key + "b" in params else None
        self.class_bias_key = self.class_key + "b" if self.bias_key is not None else None
        self.params_of = (key, self.class_key) + ((self.bias_key, self.class_bias_key) if self.bias_key else ())
        self.buffers = {"word_class": self.word_class}
        self.order = np.argsort(self.word_class, kind="stable")  # words grouped by class, by id inside
        self.starts = np.searchsorted(self.word_class[self.order], np.arange(self.n_classes + 1))
        self.position = np.empty(self.vocab_size, np.int64)  # a word's index among its class's words
        self.position[self.order] = np.arange(self.vocab_size) - self.starts[self.word_class[self.order]]

    def members(self, c: int) -> np.ndarray:
        """The word ids of class c, ascending."""
        return self.order[self.starts[c] : self.starts[c + 1]]

    def logits(self, s: np.ndarray) -> np.ndarray:
        """log P(w | s) for every word: normalised log-probabilities, which sample and argmax like logits."""
        s = np.asarray(s, self.dtype)
        flat = s.reshape(-1, self.hidden_dim)
        class_logits = flat @ self.params[self.class_key].T
        word_logits = flat @ self.params[self.key].T
        if self.bias_key is not None:
            class_logits += self.params[self.class_bias_key]
            word_logits += self.params[self.bias_key]
        class_logp = class_logits - _logsumexp(class_logits)[:, None]
        grouped = word_logits[:, self.order]
        starts = self.starts[:-1]
        top = np.maximum.reduceat(grouped, starts, axis=1)
        sizes = np.diff(self.starts)
        lse = np.log(np.add.reduceat(np.exp(grouped - np.repeat(top, sizes, axis=1)), starts, axis=1)) + top
        out = np.empty_like(grouped)
        out[:, self.order] = grouped + np.repeat(class_logp - lse, sizes, axis=1)
        return out.reshape(*s.shape[:-1], self.vocab_size)

    def nll_grads(self, S: np.ndarray, y: np.ndarray, weights: np.ndarray | None, need_grads: bool):
        """Per-row NLL and, with `need_grads`, dL/dS and {key: dL/dV, key + "c": dL/dVc}, rows weighted (0: padding)."""
        N = S.shape[0]
        Vc = self.params[self.class_key]
        target_class = self.word_class[y]
        rows = np.arange(N)
        # P(class | s): all rows at once, each row shifted by its max (C is small, the shift cheap).
        L = S @ Vc.T
        if self.class_bias_key is not None:
            L += self.params[self.class_bias_key]
        L -= L.max(axis=1, keepdims=True)
        target = L[rows, target_class]
        np.exp(L, out=L)
        z = L.sum(axis=1)
        nll = np.log(z) - target
        dS = dV = None
        grads: dict[str, np.ndarray] | None = None
        if need_grads:
            L *= (weights / z)[:, None]
            L[rows, target_class] -= weights
            dS = L @ Vc
            grads = {self.class_key: L.T @ S}
            dV = np.zeros((self.vocab_size, self.hidden_dim), self.dtype)
            if self.bias_key is not None:
                grads[self.class_bias_key] = L.sum(axis=0)
                grads[self.bias_key] = np.zeros(self.vocab_size, self.dtype)
        # P(word | class, s): the rows of each class present, against that class's words only.
        by_class = np.argsort(target_class, kind="stable")
        present, first = np.unique(target_class[by_class], return_index=True)
        for c, R in zip(present.tolist(), np.split(by_class, first[1:])):
            self._word_part(c, R, S, y, weights, nll, dS, dV, None if grads is None else grads.get(self.bias_key))
        if grads is not None and dV is not None:
            grads[self.key] = dV
        return nll, dS, grads

    def _word_part(self, c, R, S, y, weights, nll, dS, dV, db) -> None:
        """Softmax over class c's words for the rows R whose target is in c; writes rows R and c's rows of dV
        (and of db) only."""
        words = self.members(c)
        Vw = self.params[self.key][words]
        Sr = S[R]
        local = np.arange(len(R))
        L = Sr @ Vw.T
        if self.bias_key is not None:
            L += self.params[self.bias_key][words]
        L -= L.max(axis=1, keepdims=True)
        pos = self.position[y[R]]
        target = L[local, pos]
        np.exp(L, out=L)
        z = L.sum(axis=1)
        nll[R] += np.log(z) - target
        if dS is None:
            return
        w = weights[R]
        L *= (w / z)[:, None]
        L[local, pos] -= w
        dS[R] += L @ Vw
        dV[words] = L.T @ Sr
        if db is not None:
            db[words] = L.sum(axis=0)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1)
    return np.log(np.exp(a - top[:, None]).sum(axis=1)) + top


def make_output(
    kind: str,
    params: MutableMapping[str, np.ndarray],
    key: str,
    threads: int,
    rng: np.random.Generator,
    classes: int | None = None,
    counts: np.ndarray | None = None,
    word_class: np.ndarray | None = None,
    bias: bool = False,
) -> SoftmaxOutput | ClassOutput:
    """The output layer `kind` (softmax | class) over params[key] (V, H), adding its own parameters to `params`.

    `threads` are the softmax's workers (the class output runs in the calling thread). The class
    output takes its assignment from `word_class` (a checkpoint's) or bins the training
    `counts` into `classes` classes (null: round(√V)); its class weights are drawn from `rng`
    uniformly in ±1/√H, like V.
    """
    if bias and key + "b" not in params:  # zero, as PyTorch's word_language_model starts its decoder's bias
        params[key + "b"] = np.zeros(params[key].shape[0], params[key].dtype)
    if kind == "softmax":
        return SoftmaxOutput(params, key, threads)
    if kind != "class":
        raise UserError(f"model.output must be softmax or class, got {kind!r}.")
    V, H = params[key].shape
    if word_class is None:
        if counts is None:
            raise UserError(
                "model.output=class needs the training data's word counts to form its classes: "
                "build the model through build_model(..., counts=...)."
            )
        if len(counts) != V:
            raise UserError(f"the word counts cover {len(counts)} words, the vocabulary {V}: count the training split.")
        word_class = frequency_classes(counts, default_classes(V) if classes is None else classes)
    word_class = np.asarray(word_class, dtype=np.int64)
    if word_class.shape != (V,) or word_class.min() < 0 or np.unique(word_class).size != word_class.max() + 1:
        raise UserError(
            f"the word classes must give each of the {V} words a class 0..C-1 with no class empty: "
            "the checkpoint does not match this vocabulary."
        )
    class_key = key + "c"
    if class_key not in params:
        bound = 1.0 / np.sqrt(H)
        params[class_key] = rng.uniform(-bound, bound, (int(word_class.max()) + 1, H)).astype(params[key].dtype)
    if bias and class_key + "b" not in params:
        params[class_key + "b"] = np.zeros(params[class_key].shape[0], params[key].dtype)
    return ClassOutput(params, key, word_class)
