"""Sentences from a trained run: `python -m rnnexp.generate run_id=... num=5 temperature=0.8`."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np

from rnnexp import cli, config, trained, tracking
from rnnexp.data.vocab import Vocabulary
from rnnexp.errors import UserError
from rnnexp.model import RNNLM


def sample_sentences(model: RNNLM, vocab: Vocabulary, rng: np.random.Generator, num: int, max_len: int,
                     temperature: float = 1.0, top_k: int | None = None) -> list[str]:
    """`num` sentences sampled word by word from the sentence-start token, never the unknown token."""
    if vocab.start_id is None:
        raise UserError("this vocabulary has no sentence-start token to sample from: generation needs sentence data.")
    return [
        vocab.separator.join(vocab.decode(model.sample(rng, vocab.start_id, vocab.end_id, vocab.unknown_id,
                                                       max_len, temperature, top_k)))
        for _ in range(num)
    ]


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@cli.reports_user_errors
def main(cfg: config.GenerateConfig) -> None:
    client = tracking.connect(tracking.resolve_tracking_uri(cfg.tracking_uri))
    run = trained.load(client, cfg.run_id, cfg.checkpoint, Path(cfg.checkpoint_dir).resolve())
    rng = np.random.default_rng(cfg.seed)
    for sentence in sample_sentences(run.model, run.vocab, rng, cfg.num, cfg.max_len, cfg.temperature, cfg.top_k):
        print(sentence)


if __name__ == "__main__":
    cli.guard(main)
