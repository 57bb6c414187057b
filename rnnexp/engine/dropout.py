"""Inverted dropout for the gated models, with masks that a resumed run draws again bitwise."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rnnexp.errors import UserError


@dataclass
class DropoutMasks:
    """Inverted-dropout masks (0 or 1/(1-p)), time-major: what a training step multiplies in."""

    inputs: list[np.ndarray]  # per layer, (T, B, its input size): the embeddings, then between layers
    output: np.ndarray  # (T, B, H): the top layer's states before the softmax

    def check_shapes(self, T: int, B: int, input_sizes: Sequence[int], hidden_dim: int) -> None:
        shapes = [m.shape for m in (*self.inputs, self.output)]
        expected = [(T, B, size) for size in input_sizes] + [(T, B, hidden_dim)]
        if shapes != expected:
            raise UserError(f"dropout masks must have the shapes {expected}, got {shapes}.")


def draw_masks(
    seed: int,
    params: Mapping[str, np.ndarray],
    batch: Sequence[np.ndarray | None],
    input_sizes: Sequence[int],
    hidden_dim: int,
    rate: float,
    dtype: np.dtype,
) -> DropoutMasks:
    """The masks of one batch: a pure function of the model's seed, the batch (x, y, mask, h0) and the
    cells' current parameters, which every update changes and every checkpoint restores bitwise. So a
    resumed run draws the same masks as the uninterrupted one, and no generator's state is consumed:
    extra calls (the diagnostics') change nothing that follows."""
    digest = hashlib.sha256()
    for part in batch:
        digest.update(b"-" if part is None else np.ascontiguousarray(part).tobytes())
    for name, value in params.items():
        if name not in ("U", "V"):
            digest.update(value.tobytes() if value.ndim == 1 else np.float64(value.sum(dtype=np.float64)).tobytes())
    words = np.frombuffer(digest.digest(), dtype=np.uint32)
    rng = np.random.default_rng([seed, *words.tolist()])
    x = batch[0]
    assert x is not None
    T, B = x.shape[1], x.shape[0]
    scale = dtype.type(1.0 / (1.0 - rate))

    def draw(size: int) -> np.ndarray:
        return (rng.random((T, B, size), dtype=np.float32) >= rate).astype(dtype) * scale

    return DropoutMasks([draw(size) for size in input_sizes], draw(hidden_dim))
