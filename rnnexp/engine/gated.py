"""Gated language models: an embedding, stacked layers of a cell (`rnnexp.engine.cells`), an output
layer, vectorised over batch and time, with exact truncated BPTT.

    e_t = U[:, x_t]          the embedding; U is (E, V), stored column-major
    h^l_t = cell(h^{l-1}_t, state^l_{t-1})    h^0_t = e_t
    o_t = softmax(V h^L_t)   V (V×H), or Uᵀ with `tie_weights`

Dropout, in training only, sits where Zaremba et al. put it: on the embeddings, between layers and
before the softmax, never on the recurrent connections. The carried state is one (B, state_size)
array, layer after layer, each layer's h followed (LSTM) by its c, so the trainer never needs to
know the cell.

Truncation modes as in `rnnexp.engine.rnn`. A step backwards is linear in the incoming error with
coefficients fixed by the forward pass, so in the ``window`` mode every output's error is pushed
back together, one depth at a time, as one product over every time step at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnexp.config.schema import ModelConfig
from rnnexp.engine.cells.protocol import Cell, LayerPass, Params, PreactivationGrads
from rnnexp.engine.dropout import DropoutMasks, draw_masks
from rnnexp.engine.grads import column_grad
from rnnexp.engine.model import Inference, LanguageModel, Step
from rnnexp.engine.outputs import make_output
from rnnexp.engine.outputs.tied import TiedOutput
from rnnexp.engine.threads import blas_single_threaded

EMBEDDING_INIT = 0.1  # U and V uniform in ±0.1, as PyTorch's word_language_model initialises them
StateError = tuple[np.ndarray | None, np.ndarray | None]  # a layer's (dL/dh, dL/dc) at the steps a depth covers


class GatedLM(LanguageModel):
    """Stacked layers of a gated cell with the engine's public API (see `rnnexp.engine`).

    Initialisation as PyTorch's word_language_model: U and V uniform in ±0.1, each layer's as its
    cell's `new_params`. Parameters: `U` (E, V) column-major, per layer l `<cell><l>_<name>` for
    each of the cell's parameters, and `V` (V, H) unless the weights are tied.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        seed: int | None,
        threads: int,
        counts: np.ndarray | None,
        word_class: np.ndarray | None,
        cell: type[Cell[Any, Any]],
    ):
        super().__init__(cfg, vocab_size, threads)
        self._cell = cell(self.H)
        self.cell, self.layers = self._cell.name, int(cfg.layers)
        self.E = int(cfg.embedding_dim) if cfg.embedding_dim is not None else self.H
        self.dropout, self.tie_weights = float(cfg.dropout), bool(cfg.tie_weights)
        self.state_size = self.layers * self.H * self._cell.state_parts
        self.prefixes = [f"{self.cell}{l}" for l in range(self.layers)]
        rng = np.random.default_rng(seed)
        self._dropout_seed = int(seed) if seed is not None else int(np.random.default_rng().integers(2**63))

        def uniform(shape, bound):
            return rng.uniform(-bound, bound, shape).astype(self.dtype)

        self.params = {"U": np.asfortranarray(uniform((self.E, self.vocab_size), EMBEDDING_INIT))}
        for l, prefix in enumerate(self.prefixes):
            own = self._cell.new_params(uniform, self.E if l == 0 else self.H, self.dtype, cfg)
            self.params.update({f"{prefix}_{name}": value for name, value in own.items()})
        if not self.tie_weights:
            self.params["V"] = uniform((self.vocab_size, self.H), EMBEDDING_INIT)
        weights = TiedOutput(self.params) if self.tie_weights else self.params
        # softmax, or the class-based one (from the training `counts`, or a checkpoint's `word_class`)
        self.output = make_output(
            cfg.output, weights, "V", self._pool, rng, cfg.classes, counts, word_class, cfg.output_bias
        )

    def _state_hint(self) -> str:
        return f"the {self.cell}'s whole state"

    def _layer_params(self, l: int) -> Params:
        prefix = self.prefixes[l]
        return {name[len(prefix) + 1 :]: value for name, value in self.params.items() if name.startswith(prefix + "_")}

    def dropout_masks(self, x, y, mask=None, h0=None) -> DropoutMasks | None:
        """The masks `backprop` draws for this batch now; None without dropout (see `dropout.draw_masks`)."""
        if self.dropout == 0.0:
            return None
        x, y, mask, h0 = self._check(x, y, mask, h0)
        sizes = [self.E if l == 0 else self.H for l in range(self.layers)]
        return draw_masks(self._dropout_seed, self.params, (x, y, mask, h0), sizes, self.H, self.dropout, self.dtype)

    # ---------------------------------------------------------------- forward
    def _forward(
        self, x: np.ndarray, h0: np.ndarray | None, masks: DropoutMasks | None, backward: bool
    ) -> tuple[list[Any], np.ndarray]:
        """Every layer over all steps, and the top states as the output layer sees them (T, B, H)."""
        width = self.H * self._cell.state_parts  # of one layer's part of the carried state
        inputs = np.take(self.params["U"].T, x.T, axis=0)  # (T, B, E): the embeddings, without one-hot
        layers = []
        for l in range(self.layers):
            if masks is not None:
                inputs = inputs * masks.inputs[l]
            state0 = None if h0 is None else h0[:, l * width : (l + 1) * width]
            layer = self._cell.forward(self._layer_params(l), inputs, state0, self._pool, backward)
            layers.append(layer)
            inputs = layer.h
        top = layers[-1].h if masks is None else layers[-1].h * masks.output
        return layers, top

    @staticmethod
    def _last_state(layers: list[LayerPass], lengths: np.ndarray) -> np.ndarray:
        rows, at = np.arange(len(lengths)), lengths - 1
        return np.concatenate([part for layer in layers for part in layer.final_state(at, rows)], axis=1)

    def _inference(self, x: np.ndarray, h0: np.ndarray | None) -> Inference:
        layers, top = self._forward(x, h0, None, backward=False)
        return Inference(top, lambda lengths: self._last_state(layers, lengths))

    # --------------------------------------------------------------- backward
    def _backward_full(self, layers: list[Any], ext: np.ndarray, masks: DropoutMasks | None) -> list[Any]:
        """Full BPTT over the whole sequence, layer after layer from the top."""
        T, B = ext.shape[0], ext.shape[1]
        accs: list[Any] = [None] * self.layers
        for l in reversed(range(self.layers)):
            acc = accs[l] = self._cell.new_grads(T, B, self.dtype, zero=False)
            self._back_steps(self._layer_params(l), layers[l], ext, acc)
            if l:
                ext = self._input_grad(l, acc).reshape(T, B, self.H)
                if masks is not None:
                    ext *= masks.inputs[l]
        return accs

    def _back_steps(self, p: Params, layer: LayerPass, ext: np.ndarray, acc: PreactivationGrads) -> None:
        """The backward time loop of one layer: its pre-activation gradients into `acc`."""
        dh = np.empty_like(ext[0])
        rec, dc = None, None
        for t in range(ext.shape[0] - 1, -1, -1):
            if rec is None:
                np.copyto(dh, ext[t])
            else:
                np.add(ext[t], rec, out=dh)
            grads, dc = self._cell.back(layer, t, dh, dc, out=acc.at(t))
            if t:
                rec = self._cell.recurrent(p, layer, t, dh, grads)

    def _input_grad(self, l: int, acc: PreactivationGrads) -> np.ndarray:
        """dL/d(layer l's input) for every step, (T·B, in), rows split among the threads."""
        flat = acc.flat()
        p = self._layer_params(l)
        out = np.empty((flat.parts()[0].shape[0], p["Wx"].shape[1]), self.dtype)

        def block(r0: int, r1: int) -> Callable[[], None]:
            def task() -> None:
                self._cell.input_grad(p, flat.at(slice(r0, r1)), out=out[r0:r1])

            return task

        self._pool.run([block(r0, r1) for r0, r1 in self._pool.row_blocks(out.shape[0])])
        return out

    def _one_depth_back(
        self, layers: list[Any], errors: list[StateError], ext: np.ndarray | None, n: int, push: bool, masks
    ) -> tuple[list[Any], list[StateError]]:
        """Every layer, top down, one depth further back: the errors that sit at steps 0..n-1 (the top layer's
        plus `ext`, the outputs' own at depth 0) through those steps' gates. Returns each layer's
        pre-activation gradients and, with `push`, the errors at steps 0..n-2 for the next depth."""
        at = slice(0, n)
        above = ext
        grads_of: list[Any] = [None] * self.layers
        pushed: list[StateError] = [(None, None)] * self.layers
        for l in reversed(range(self.layers)):
            p, layer = self._layer_params(l), layers[l]
            dh_rec, dc_rec = errors[l]
            dh = above if dh_rec is None else (dh_rec if above is None else dh_rec + above)
            assert dh is not None  # the top layer's error at depth 0, else the step after's
            grads, dc = self._cell.back(layer, at, dh, dc_rec)
            grads_of[l] = grads
            if push:
                pushed[l] = (self._cell.recurrent(p, layer, at, dh, grads)[1:], None if dc is None else dc[1:])
            if l:
                above = self._cell.input_grad(p, grads)
                if masks is not None:
                    above *= masks.inputs[l][at]
        return grads_of, pushed

    def _push_gradients(
        self, layers: list[Any], ext: np.ndarray, depth: int, masks: DropoutMasks | None
    ) -> list[PreactivationGrads]:
        """Window BPTT: every output's error pushed back `depth` steps, one depth at a time for all steps at
        once (at depth j the error of output t sits at step t - j), summed into each layer's gradients."""
        T, B = ext.shape[0], ext.shape[1]
        accs = [self._cell.new_grads(T, B, self.dtype, zero=True) for _ in range(self.layers)]
        errors: list[StateError] = [(None, None)] * self.layers
        for j in range(depth + 1):
            grads_of, errors = self._one_depth_back(
                layers, errors, ext[: T - j] if j == 0 else None, T - j, j < depth, masks
            )
            for acc, grads in zip(accs, grads_of):
                acc.add_at(slice(0, T - j), grads)
        return accs

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
        batch = self._batch(x, y, mask, h0, reduction)
        x, m = batch.x, batch.real
        B, T = x.shape
        masks = self.dropout_masks(x, batch.y, batch.mask, batch.h0) if dropout is None else dropout
        if masks is not None:
            masks.check_shapes(T, B, [self.E if l == 0 else self.H for l in range(self.layers)], self.H)

        layers, top = self._forward(x, batch.h0, masks, backward=True)
        nll, dS, output_grads = self.output.nll_grads(
            top.reshape(T * B, self.H), batch.y.T.reshape(-1), batch.weights, True
        )
        dV = output_grads.pop("V")
        loss = self._mean_loss(nll, batch)
        ext = dS.reshape(T, B, self.H)
        if masks is not None:
            ext *= masks.output
        depth = self._depth(T)
        if depth == T - 1:
            accs = self._backward_full(layers, ext, masks)
        else:
            accs = self._push_gradients(layers, ext, depth, masks)

        grads: dict = output_grads  # the output layer's own besides V (the class output's Vc)
        tasks = [
            task
            for l, prefix in enumerate(self.prefixes)
            for task in self._cell.weight_tasks(layers[l], accs[l], prefix, grads)
        ]
        self._pool.run(tasks)
        d_embed = self._input_grad(0, accs[0])
        if masks is not None:
            d_embed *= masks.inputs[0].reshape(T * B, self.E)
        columns = column_grad(x.T.reshape(-1), d_embed, m.reshape(-1) > 0)
        if self.tie_weights:
            dV[columns.cols] += columns.rows  # dV is the gradient of Uᵀ: one dense (V, E) array
            grads["U"] = dV.T
        else:
            grads["U"] = columns if sparse_u else columns.toarray(self.vocab_size)
            grads["V"] = dV
        lengths = m.sum(axis=0).astype(int)
        return Step(
            loss, batch.n_tokens, {name: grads[name] for name in self.params}, self._last_state(layers, lengths)
        )

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
        weights = real.reshape(-1).astype(self.dtype)  # unscaled: each output's own loss
        _, dS, _ = self.output.nll_grads(top.reshape(T * B, self.H), y.T.reshape(-1), weights, need_grads=True)
        ext = dS.reshape(T, B, self.H)
        decay = np.full(max_depth + 1, np.nan)
        if real.any():
            decay[0] = float(np.linalg.norm(ext, axis=2)[real].mean())
        errors: list[StateError] = [(None, None)] * self.layers
        for k in range(1, min(max_depth, T - 1) + 1):
            # the errors at depth k: each layer's (dL/dh, dL/dc) of the state at step t - k before that step's gates
            _, errors = self._one_depth_back(
                layers, errors, ext[: T - k + 1] if k == 1 else None, T - k + 1, True, None
            )
            sq = sum((part * part).sum(axis=2) for pair in errors for part in pair if part is not None)
            outputs = real[k:]
            if outputs.any():
                decay[k] = float(np.sqrt(sq)[outputs].mean())
        return decay

    def _sampling_start(self, start_id: int, prefix: Sequence[int]) -> tuple[np.ndarray, int]:
        state = np.zeros((1, self.state_size), self.dtype)
        if not len(prefix):
            return state, start_id
        read = np.array([[start_id, *prefix[:-1]]])
        layers, _ = self._forward(read, state, None, backward=False)
        return self._last_state(layers, np.array([read.shape[1]])), int(prefix[-1])

    def _sampling_step(self, state: np.ndarray, word: int) -> tuple[np.ndarray, np.ndarray]:
        layers, top = self._forward(np.array([[word]]), state, None, backward=False)
        return self._last_state(layers, np.ones(1, int)), self.output.logits(top[0, 0])
