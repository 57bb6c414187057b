"""`python -m rnnexp.ngram dataset=ptb [orders=[2,3,4,5]] [modified=false]`: Kneser–Ney perplexities.

One row per order: validation and test perplexity on exactly the tokens an RNN run on the same data
is scored on (`protocol=stateful`: one stream; `sentence`: each line on its own), and the seconds
to build and score the model.
"""

from __future__ import annotations

import hydra

from rnnexp import cli, config
from rnnexp.config.resolve import is_word_level_real_data, validate_kn_orders
from rnnexp.data import load_corpus
from rnnexp.errors import UserError
from rnnexp.tracking.tables import markdown_table
from rnnexp.training.baseline import timed_table


@hydra.main(version_base="1.3", config_path="../conf", config_name="ngram")
@cli.reports_user_errors
def main(cfg: config.NgramConfig) -> None:
    validate_kn_orders(list(cfg.orders), "orders")
    if cfg.protocol not in ("stateful", "sentence"):
        raise UserError(f"protocol must be stateful or sentence, got {cfg.protocol!r}.")
    if not is_word_level_real_data(cfg.dataset):
        reason = "its oracle is the reference" if cfg.dataset.name == "synthetic" else "it is character-level data"
        raise UserError(
            f"a Kneser–Ney baseline needs word-level real data, but {cfg.dataset.name} is not ({reason}): "
            "choose dataset=ptb, reddit, or text with dataset.level=word."
        )
    corpus = load_corpus(cfg.dataset, seed=cfg.seed)
    rows = timed_table(corpus, cfg.protocol, list(cfg.orders), cfg.modified)
    kind = "modified" if cfg.modified else "plain"
    header = ["order", "valid ppl", "test ppl", "tokens scored (valid / test)", "build s", "score s"]
    table = [
        [
            f"KN{row['order']} ({kind})",
            f"{row.get('valid_ppl', float('nan')):.2f}",
            f"{row.get('test_ppl', float('nan')):.2f}",
            f"{row.get('valid_tokens', 0):,} / {row.get('test_tokens', 0):,}",
            f"{row['build_s']:.2f}",
            f"{row['score_s']:.2f}",
        ]
        for row in rows
    ]
    print(
        f"Kneser–Ney on {corpus.name} ({len(corpus.vocab):,} words, {cfg.protocol} protocol, "
        f"{corpus.splits['train'].n_targets:,} training targets)\n{markdown_table(header, table)}",
        end="",
    )


if __name__ == "__main__":
    cli.guard(main)
