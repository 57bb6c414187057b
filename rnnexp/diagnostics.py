"""Diagnostics that make the vanishing gradient visible: how far back a tanh RNN's error reaches.

`gradient_decay` measures ||∂L_t/∂s_{t-k}||, the gradient of one output's loss with respect to the
hidden state k steps earlier, averaged over outputs, for k = 0..K, whatever the training truncation
(the diagnostic always follows the full, untruncated chain). Depth k costs one (N×H)·(H×H) product.
"""

from __future__ import annotations

import numpy as np

from rnnexp.model import RNNLM, blas_single_threaded, squared_norm

SATURATION = 0.99


@blas_single_threaded
def gradient_decay(model: RNNLM, x, y, mask=None, max_depth: int = 20) -> np.ndarray:
    """Mean ||∂L_t/∂s_{t-k}|| over the real outputs t with t-k >= 0, for k = 0..max_depth (NaN where none)."""
    x, y, mask, _ = model._check(x, y, mask)
    B, T = x.shape
    real = np.ones((T, B), bool) if mask is None else mask.T
    S = model._states(x, None)
    weights = real.reshape(-1).astype(model.dtype)  # unscaled: each output's own loss
    _, dS, _ = model._output_layer(S.reshape(T * B, model.H), y.T.reshape(-1), weights, need_grads=True)
    dtanh = 1.0 - S * S
    Q = dS.reshape(T, B, model.H)  # Q[i] = ∂L_{i+k}/∂s_i at depth k
    W = model.params["W"]
    decay = np.full(max_depth + 1, np.nan)
    for k in range(min(max_depth, T - 1) + 1):
        if k > 0:
            Q = (Q[1:] * dtanh[1 : T - k + 1]) @ W
        outputs = real[k:]
        if outputs.any():
            decay[k] = float(np.linalg.norm(Q, axis=2)[outputs].mean())
    return decay


def weight_spectrum(W: np.ndarray) -> dict[str, float]:
    """Spectral radius and largest singular value of the recurrent matrix: above 1, gradients can grow."""
    return {
        "w_spectral_radius": float(np.abs(np.linalg.eigvals(W)).max()),
        "w_max_singular_value": float(np.linalg.norm(W, 2)),
    }


def saturation(states: np.ndarray, mask=None) -> float:
    """Fraction of tanh units with |s| > 0.99, where the derivative (1 - s²) all but stops the gradient."""
    saturated = np.abs(states) > SATURATION
    if mask is None:
        return float(saturated.mean())
    real = np.asarray(mask, bool)
    return float(saturated[real].mean())


def gradient_norms(grads: dict) -> dict[str, float]:
    """The L2 norm of each parameter's gradient."""
    return {
        f"grad_norm_{name}": float(np.sqrt(squared_norm(g))) for name, g in grads.items()
    }


def plot_gradient_decay(history: dict[int, np.ndarray], truncate: int | None = None):
    """A matplotlib Figure: gradient norm against steps back, one line per epoch, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    epochs = sorted(history)
    for i, epoch in enumerate(epochs):
        decay = np.asarray(history[epoch])
        ax.semilogy(np.arange(len(decay)), decay, marker=".", color=cmap(i / max(1, len(epochs) - 1)), label=f"epoch {epoch}")
    if truncate is not None:
        ax.axvline(truncate, color="grey", linestyle="--", label=f"bptt_truncate={truncate}")
    ax.set_xlabel("k (steps back)")
    ax.set_ylabel("mean ||∂L_t / ∂s_{t-k}||")
    ax.set_title("How far back the error reaches")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
