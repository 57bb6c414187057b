"""`python -m rnnexp.check_gradients [model=lstm] [model.truncation=chunk]`: the engine against central differences.

A tiny float64 model and a random sequence; exits 1 when any parameter's relative error reaches
`tolerance`, 2 on bad input. The objective each truncation mode differentiates is in
`rnnexp.engine.gradcheck`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import hydra
import numpy as np
from omegaconf import OmegaConf

from rnnexp import cli, config
from rnnexp.config.resolve import validate_model
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.gradcheck import relative_errors
from rnnexp.errors import UserError

GATED_SPREAD = 0.5


@hydra.main(version_base="1.3", config_path="../conf", config_name="check_gradients")
@cli.reports_user_errors
def main(cfg: config.CheckGradientsConfig) -> None:
    m = cfg.model
    validate_model(m)
    if cfg.seq_len < 1:
        raise UserError(f"seq_len must be >= 1, got {cfg.seq_len}.")
    # The class output bins words by training counts; a gradient check has no corpus, so it takes Zipf-like
    # counts (word i seen 1/(i+1) as often as word 0), which make classes of unequal sizes as real text does.
    counts = 1.0 / np.arange(1, cfg.vocab_size + 1) if m.output == "class" else None
    model_cfg = replace(cast(ModelConfig, OmegaConf.to_object(m)), dtype="float64")
    model = build_model(model_cfg, cfg.vocab_size, cfg.seed, counts=counts)
    rng = np.random.default_rng(cfg.seed)
    if m.cell != "rnn":
        # As initialised, a gated cell's biases are 0 and its recurrent gradients so small that central
        # differences see mostly roundoff: draw every parameter in ±GATED_SPREAD so that each term counts.
        for p in model.params.values():
            p[...] = rng.uniform(-GATED_SPREAD, GATED_SPREAD, p.shape)
    x, y = rng.integers(0, cfg.vocab_size, (2, cfg.seq_len))
    errors = relative_errors(model, x, y, cfg.eps)
    print(f"gradient check, {OmegaConf.to_yaml(cfg).strip().replace(chr(10), ', ')}")
    for name, err in errors.items():
        print(f"  d{name}: relative error {err:.2e}  {'ok' if err < cfg.tolerance else 'FAILED'}")
    if max(errors.values()) >= cfg.tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    cli.guard(main)
