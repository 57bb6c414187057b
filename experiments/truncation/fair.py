"""The report's fair-protocol sections: the learning-rate grid, fixed rate against fair, and the LSTM's case.

Every sentence is computed from the cells: a verdict, a comparison or an explanation changes
when the numbers do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from experiments.truncation.grid import Choice, GridSweep
from experiments.truncation.measure import CELL_NAMES, FAIR_SUFFIX, Cell
from experiments.truncation.text import fmt, interval_text
from rnnexp.tracking.tables import markdown_table


def family_label(family: str) -> str:
    return CELL_NAMES.get(family, f"{family} ").strip() or "RNN"


def grid_table(choices: Mapping[str, Choice]) -> str:
    """Mean best validation loss [95% interval] per family × rate; the chosen rate bold, an edge flagged."""
    rates = sorted({point.lr for choice in choices.values() for point in choice.points})
    rows = []
    for choice in choices.values():
        at = {point.lr: point for point in choice.points}
        row = [family_label(choice.family)]
        for lr in rates:
            point = at.get(lr)
            if point is None:
                row.append("")
                continue
            interval = point.interval
            text = f"{interval.mean:.4f} [{fmt(interval.low, 4)}, {fmt(interval.high, 4)}]"
            if point.failed:
                text += f", {point.failed}/{len(point.best_val_losses)} failed"
            updates = round(sum(point.updates) / len(point.updates)) if point.updates else 0
            text += f"; {updates} updates"
            row.append(f"**{text}**" if lr == choice.lr else text)
        edge = " (on the grid's edge)" if choice.on_edge else ""
        rows.append([*row, f"{choice.lr:g}{edge}"])
    return markdown_table(["family", *(f"lr {lr:g}" for lr in rates), "chosen"], rows)


def twins(cells: Sequence[Cell]) -> list[tuple[Cell, Cell | None]]:
    """Each fair-protocol cell with its fixed-rate twin (same distance and setting), if the study ran it."""
    at = {(cell.distance, cell.setting): cell for cell in cells}
    return [
        (fair, at.get((fair.distance, fair.setting.removesuffix(FAIR_SUFFIX))))
        for fair in cells
        if fair.setting.endswith(FAIR_SUFFIX)
    ]


def verdict_text(cell: Cell) -> str:
    return f"{cell.verdict}, {cell.seeds_learnt}/{len(cell.finished)} seeds"


def before_after(cells: Sequence[Cell]) -> str:
    rows = []
    for fair, fixed in twins(cells):
        rows.append(
            [
                f"d = {fair.distance}",
                fair.setting.removesuffix(FAIR_SUFFIX),
                f"{interval_text(fixed)} ({verdict_text(fixed)})" if fixed else "not run",
                f"{interval_text(fair)} ({verdict_text(fair)})",
                f"{fmt(fixed.mean('lr'), 2, 'g')} → {fmt(fair.mean('lr'), 2, 'g')}" if fixed else "",
                f"{fmt(fixed.mean('updates'), 0)} → {fmt(fair.mean('updates'), 0)}" if fixed else "",
                fmt(fair.mean("updates_to_best"), 0),
                f"{sum(job.stopped_early for job in fair.finished)}/{len(fair.finished)}",
                f"{fmt(fixed.mean('echo_accuracy'))} → {fmt(fair.mean('echo_accuracy'))}" if fixed else "",
            ]
        )
    header = [
        "distance",
        "setting",
        "fixed rate: excess [95% interval] (verdict)",
        "fair protocol: excess [95% interval] (verdict)",
        "lr",
        "updates (mean)",
        "fair: updates to the best checkpoint",
        "fair: stopped early",
        "echo accuracy",
    ]
    return markdown_table(header, rows)


def changed_by_protocol(cells: Sequence[Cell]) -> str:
    """What the confound did: the cells whose verdict the fair protocol changed."""
    changed = [
        f"{fixed.setting} at d = {fair.distance} ({fixed.verdict} → {fair.verdict})"
        for fair, fixed in twins(cells)
        if fixed is not None and fixed.verdict != fair.verdict
    ]
    compared = sum(fixed is not None for _, fixed in twins(cells))
    if not changed:
        return f"The fair protocol changes none of the {compared} verdicts it can be compared on."
    return f"The fair protocol changes {len(changed)} of the {compared} verdicts: " + "; ".join(changed) + "."


def gated_against_rnn(cells: Sequence[Cell], suffix: str = FAIR_SUFFIX) -> list[tuple[Cell, Cell]]:
    """(LSTM full, RNN full) under the fair protocol (or, with suffix "", the fixed rate), per distance both ran."""
    at = {(cell.distance, cell.setting): cell for cell in cells}
    return [
        (lstm, at[(lstm.distance, "full" + suffix)])
        for lstm in cells
        if lstm.setting == "LSTM full" + suffix and (lstm.distance, "full" + suffix) in at
    ]


def loses(lstm: Cell, rnn: Cell) -> bool:
    """The LSTM's interval lies wholly above the RNN's: it learns the dependency worse, beyond the seeds' noise."""
    return lstm.interval().low > rnn.interval().high


def lstm_section(cells: Sequence[Cell]) -> str:
    """Where the LSTM still loses to the tanh RNN under the fair protocol, and the evidence why."""
    pairs = gated_against_rnn(cells)
    if not pairs:
        return "The fair protocol did not train both the LSTM and the tanh RNN with full BPTT: nothing to compare.\n"
    rows = [
        [
            f"d = {lstm.distance}",
            f"{interval_text(rnn)} / {interval_text(lstm)}",
            f"{fmt(rnn.mean('gradient_reach'), 1, 'e')} / {fmt(lstm.mean('gradient_reach'), 1, 'e')}",
            f"{fmt(rnn.mean('updates'), 0)} / {fmt(lstm.mean('updates'), 0)}",
            f"{fmt(rnn.mean('updates_to_best'), 0)} / {fmt(lstm.mean('updates_to_best'), 0)}",
            f"{sum(not j.stopped_early for j in rnn.finished)} / {sum(not j.stopped_early for j in lstm.finished)}",
            f"{fmt(rnn.mean('other_excess'), 3)} / {fmt(lstm.mean('other_excess'), 3)}",
            fmt(lstm.mean("forget_bias"), 2, "g"),
            "yes" if loses(lstm, rnn) else "no",
        ]
        for lstm, rnn in pairs
    ]
    table = markdown_table(
        [
            "distance",
            "excess: RNN / LSTM",
            "gradient reach: RNN / LSTM",
            "updates used",
            "updates to the best checkpoint",
            "seeds that ran to the epoch ceiling",
            "other excess",
            "LSTM forget bias",
            "LSTM loses",
        ],
        rows,
    )
    lost = [(lstm, rnn) for lstm, rnn in pairs if loses(lstm, rnn)]
    if not lost:
        return (
            table
            + "\nUnder the fair protocol the LSTM does not lose to the tanh RNN at any distance: its 95% interval "
            "never lies wholly above the RNN's.\n"
        )
    evidence = []
    for lstm, rnn in lost:
        reach = (
            "carries less gradient back to the key"
            if lstm.mean("gradient_reach") < rnn.mean("gradient_reach")
            else "carries at least as much gradient back to the key"
        )
        ceiling = sum(not job.stopped_early for job in lstm.finished)
        budget = (
            f"{ceiling} of its {len(lstm.finished)} seeds ran to the epoch ceiling, so the budget may still bind"
            if ceiling
            else "every seed stopped early on validation, so a longer budget would not have been used"
        )
        evidence.append(
            f"at d = {lstm.distance} the LSTM {reach} ({fmt(lstm.mean('gradient_reach'), 1, 'e')} against "
            f"{fmt(rnn.mean('gradient_reach'), 1, 'e')}) with a forget bias of "
            f"{fmt(lstm.mean('forget_bias'), 2, 'g')}; {budget}"
        )
    return table + "\nWhere the LSTM still loses: " + "; ".join(evidence) + ".\n"


def task_property(cells: Sequence[Cell]) -> str:
    """Whether the LSTM's deficit is the training protocol's (gone under the fair one), the budget's (the
    ceiling was hit) or this task's (it stopped on validation and still loses): one sentence from the numbers."""
    lost = [(lstm, rnn) for lstm, rnn in gated_against_rnn(cells) if loses(lstm, rnn)]
    if not lost:
        fixed_lost = [lstm.distance for lstm, rnn in gated_against_rnn(cells, "") if loses(lstm, rnn)]
        if not fixed_lost:
            return "Under neither protocol does the LSTM lose to the tanh RNN beyond the seeds' noise."
        return (
            f"At the fixed rate the LSTM loses to the tanh RNN at d = {', '.join(map(str, fixed_lost))}, and under "
            "the fair protocol at no distance: that gap was the training protocol's (its step size and budget), "
            "not the cells' memory."
        )
    converged = all(job.stopped_early for lstm, _ in lost for job in lstm.finished)
    if converged:
        return (
            "Every LSTM seed that loses stopped on validation before the ceiling: within this task, width and "
            "optimiser the LSTM converges to a worse use of the key; whether another task or optimiser changes that "
            "is not measured here."
        )
    return (
        "Some LSTM seeds that lose ran to the epoch ceiling: the budget may still bind, so the deficit is not "
        "shown to be a property of the task."
    )


def sections(cells: Sequence[Cell], lr_grid: GridSweep, fixed_epochs: int) -> str:
    """The fair protocol: how the rates were chosen, and what it changes against the fixed rate."""
    choices = lr_grid.choices
    chosen = ", ".join(f"{family_label(c.family)} {c.lr:g}" for c in choices.values())
    edges = [family_label(c.family) for c in choices.values() if c.on_edge]
    edge_text = (
        f" The choice lies on the grid's edge for {', '.join(edges)}: a rate beyond the grid may do better."
        if edges
        else " No choice lies on the grid's edge."
    )
    return f"""
## The fair protocol: a rate per family, chosen on validation, and early stopping

The fixed-rate columns train every cell at one rate for {fixed_epochs} epochs. The cells marked *(fair)* train
each model family at the rate of lowest mean best validation loss in the grid below (MLflow experiment
`{lr_grid.experiment}`, at one distance; the test split plays no part; every cell of a family trains at its rate) and
stop once the validation loss has not improved for `train.patience` evaluations, under a ceiling of epochs (see
`conf/experiment/truncation_fair.yaml`: the patience outlasts the plateau before a late-learnt echo). Chosen:
{chosen}.{edge_text}

Best validation loss, mean [95% interval] over the seeds, and the updates used (mean), per rate (chosen: bold):

{grid_table(choices)}
## Fixed rate against the fair protocol

{changed_by_protocol(cells)}

{before_after(cells)}
## The LSTM against the tanh RNN under the fair protocol

Gradient reach as below; *updates used*: optimiser steps until the early stop (mean over the seeds).

{lstm_section(cells)}
{task_property(cells)}
"""
