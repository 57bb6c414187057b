"""Output layers, and `make_output`, which builds the one a model's config names.

Every output layer offers the same contract, and a model uses nothing else: `params_of` (its
parameter names), `buffers` (arrays that are not trained but that a checkpoint must keep),
`logits(s)` (log-probabilities up to a constant) and `nll_grads(S, y, weights, need_grads) ->
(nll, dS, grads)` with `grads` a dict name -> gradient (softmax: {'V'}; class: {'V', 'Vc'}).
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from rnnexp.engine.outputs.classes import ClassOutput, default_classes, frequency_classes
from rnnexp.engine.outputs.softmax import SoftmaxOutput
from rnnexp.engine.threads import WorkerPool
from rnnexp.errors import UserError

OutputLayer = SoftmaxOutput | ClassOutput


def make_output(
    kind: str,
    params: MutableMapping[str, np.ndarray],
    key: str,
    pool: WorkerPool,
    rng: np.random.Generator,
    classes: int | None = None,
    counts: np.ndarray | None = None,
    word_class: np.ndarray | None = None,
    bias: bool = False,
) -> OutputLayer:
    """The output layer `kind` (softmax | class) over params[key] (V, H), adding its own parameters to `params`.

    The softmax hands its rows to the `pool`'s workers (the class output runs in the calling thread).
    The class output takes its assignment from `word_class` (a checkpoint's) or bins the training
    `counts` into `classes` classes (null: round(√V)); its class weights are drawn from `rng`
    uniformly in ±1/√H, like V. With `bias`, the logits get a bias (the class output: one for the
    words and one for the classes), zero at the start as word_language_model's decoder starts its own.
    """
    if bias and key + "b" not in params:
        params[key + "b"] = np.zeros(params[key].shape[0], params[key].dtype)
    if kind == "softmax":
        return SoftmaxOutput(params, key, pool)
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


__all__ = ["ClassOutput", "OutputLayer", "SoftmaxOutput", "default_classes", "frequency_classes", "make_output"]
