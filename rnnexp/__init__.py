"""rnnexp: the "RNN from scratch" language model in NumPy, with Hydra configs and MLflow tracking.

    from rnnexp import RNNLM
    m = RNNLM(vocab_size=8000, hidden_dim=100, bptt_truncate=4, seed=10)
    loss, grads = m.loss_and_grads(x, y)
"""

from rnnexp.errors import UserError
from rnnexp.model import ColumnGrad, RNNLM, Step

__all__ = ["RNNLM", "Step", "ColumnGrad", "UserError"]
