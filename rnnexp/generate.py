"""Sentences from a trained run: `python -m rnnexp.generate run_id=... num=5 temperature=0.8`."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np

from rnnexp import cli, config
from rnnexp.config.resolve import validate_generate
from rnnexp.tracking import trained
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.training.sampling import sample_sentences


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@cli.reports_user_errors
def main(cfg: config.GenerateConfig) -> None:
    validate_generate(cfg.num, cfg.max_len, cfg.temperature, cfg.top_k, cfg.seed)
    client = connect(resolve_tracking_uri(cfg.tracking_uri))
    run = trained.load(client, cfg.run_id, cfg.checkpoint, Path(cfg.checkpoint_dir).resolve())
    rng = np.random.default_rng(cfg.seed)
    for sentence in sample_sentences(run.model, run.vocab, rng, cfg.num, cfg.max_len, cfg.temperature, cfg.top_k):
        print(sentence)


if __name__ == "__main__":
    cli.guard(main)
