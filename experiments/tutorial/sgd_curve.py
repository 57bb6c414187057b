"""Claim 5: SGD on the first 100 sentences for 10 epochs lowers the loss from about ln V.

The run is the runner's own (`python -m rnnexp.run experiment=tutorial_sgd`), read back from
MLflow. Beside it, WildML's literal training loop (`train_with_sgd` with its `sgd_step`, sentences
in file order, the tutorial's initial weights) runs on the very same sentences and vocabulary.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from experiments.tutorial import figures, literal, published
from experiments.tutorial.result import CONSISTENT, NOT_REPRODUCED, REPRODUCED, ClaimResult, markdown_table

FIGURE = "sgd_curve.png"
START_TOLERANCE = 0.05  # nats between the untrained loss and ln V
END_TOLERANCE = 0.1  # nats between the final loss and the published 5.711 (V = 8000 only)
MONITORED_LOSS = "schedule_train_loss"  # the runner's loss over the training set at each schedule check


def run_curve(client: MlflowClient, run_id: str) -> tuple[list[float], list[int], list[int]]:
    """The runner's training-set losses at its schedule checks, their epochs, and the halvings so far."""

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    losses, epochs, halvings = history(MONITORED_LOSS), history("epoch"), history("lr_halvings")
    steps = sorted(losses)
    return [losses[s] for s in steps], [int(epochs[s]) for s in steps], [int(halvings.get(s, 0)) for s in steps]


def sgd_curve(
    client: MlflowClient,
    run_id: str,
    sentences: list[np.ndarray],
    vocab_size: int,
    hidden_dim: int,
    bptt_truncate: int,
    lr: float,
    evaluate_loss_after: int,
    halving_factor: float,
    report_dir: Path,
    training_command: str,
    command: str,
) -> ClaimResult:
    losses, epochs, halvings = run_curve(client, run_id)
    model = literal.tutorial_model(vocab_size, hidden_dim, bptt_truncate)
    wildml = literal.train_with_sgd(model, sentences, lr, epochs[-1], evaluate_loss_after)
    ln_v = math.log(vocab_size)
    starts_at_ln_v = abs(losses[0] - ln_v) < START_TOLERANCE
    falls = losses[-1] < losses[0] - 0.1 and wildml[-1] < wildml[0] - 0.1
    # The published figure is the curve at V = 8000: only there can it be reproduced, within END_TOLERANCE.
    same_figure = vocab_size == published.VOCABULARY_SIZE and abs(losses[-1] - published.SGD_LOSSES[-1]) < END_TOLERANCE
    verdict = (
        REPRODUCED
        if starts_at_ln_v and falls and same_figure
        else CONSISTENT
        if starts_at_ln_v and falls
        else NOT_REPRODUCED
    )
    figures.loss_curves(
        {
            f"published (WildML part 2), V={published.VOCABULARY_SIZE:,}": (
                {"published (WildML's notebook)": list(published.SGD_LOSSES)},
                published.EXPECTED_LOSS,
            ),
            f"reproduced here, V={vocab_size:,}": ({"runner (engine)": losses, "WildML's literal loop": wildml}, ln_v),
        },
        report_dir / FIGURE,
    )
    rows = []
    for i, epoch in enumerate(epochs):
        shown = published.SGD_LOSSES[epoch] if epoch < len(published.SGD_LOSSES) else None
        rows.append(
            [
                epoch,
                "" if shown is None else f"{shown:.6f}",
                f"{losses[i]:.6f}",
                f"{wildml[i]:.6f}" if i < len(wildml) else "",
                f"{lr * halving_factor ** halvings[i]:g}",
            ]
        )
    published_drop = published.SGD_LOSSES[0] - published.SGD_LOSSES[-1]
    return ClaimResult(
        number=5,
        source=published.WILDML,
        title=f"SGD on the first {len(sentences)} sentences, lr {lr}, {epochs[-1]} epochs: the loss decreases",
        published=(
            f"{published.SGD_LOSSES[0]:.3f} → {published.SGD_LOSSES[-1]:.3f} after 9 epochs "
            "(ln 8000 = 8.987), no halving"
        ),
        reproduced=(
            f"{losses[0]:.3f} (ln {vocab_size:,} = {ln_v:.3f}) → {losses[-1]:.3f} after {epochs[-1]} epochs, "
            f"{halvings[-1]} halving(s); WildML's loop on the same data {wildml[0]:.3f} → {wildml[-1]:.3f}"
        ),
        verdict=verdict,
        reason=(
            f"the loss starts at ln V and falls ({losses[0] - losses[-1]:.2f} nats here, {published_drop:.2f} "
            "published), flat for the first epochs and then steeply, as published. The levels differ because V "
            f"does: the loader builds the vocabulary from the {len(sentences)} sentences it keeps "
            f"(dataset.max_sentences), {vocab_size:,} words, where the tutorial used the whole file's 8,000; "
            "the runner also visits the sentences in a new random order each epoch and draws its initial weights "
            "with numpy's Generator, where WildML's loop goes in file order from np.random.seed(10). With another "
            "V the published figure itself is out of reach, so the verdict is at most consistent; the rate was "
            f"halved {halvings[-1]} time(s) here (claim 9 exercises the halving)."
        ),
        command=command,
        details=[
            f"The training is the runner's run `{run_id}`: `{training_command}`. The literal loop runs in the "
            "reproduction's process.",
            markdown_table(
                [
                    "epoch",
                    "published loss",
                    "runner (engine) loss",
                    "WildML literal loop loss",
                    "runner lr for the next epoch",
                ],
                rows,
            ),
            f"![loss curves]({FIGURE})",
        ],
        figures=[FIGURE],
        metrics={
            "loss_start": losses[0],
            "loss_end": losses[-1],
            "ln_v": ln_v,
            "halvings": halvings[-1],
            "wildml_literal_start": wildml[0],
            "wildml_literal_end": wildml[-1],
        },
        params={"vocab_size": str(vocab_size), "sentences": str(len(sentences))},
        run_id=run_id,
    )
