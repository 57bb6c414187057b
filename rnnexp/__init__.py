"""rnnexp: the "RNN from scratch" language model in NumPy, with Hydra configs and MLflow tracking.

    from rnnexp.config.schema import ModelConfig
    from rnnexp.engine import build_model
    m = build_model(ModelConfig(hidden_dim=100, bptt_truncate=4, truncation="window"), 8000, seed=10)
    loss, grads = m.loss_and_grads(x, y)

The layers, bottom to top: config, data and engine, training, tracking, and the entry points
(`rnnexp.run`, `generate`, `evaluate`, `check_gradients`, `ngram`, `repair`, `ui`); see ARCHITECTURE.md.
"""
