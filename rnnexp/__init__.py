"""rnnexp: the "RNN from scratch" language model in NumPy, with Hydra configs and MLflow tracking.

    from rnnexp.engine import RNNLM
    m = RNNLM(vocab_size=8000, hidden_dim=100, bptt_truncate=4, seed=10)
    loss, grads = m.loss_and_grads(x, y)

The layers, bottom to top: config, data and engine, training, tracking, and the entry points
(`rnnexp.run`, `generate`, `evaluate`, `gradcheck`, `baseline`); see ARCHITECTURE.md.
"""
