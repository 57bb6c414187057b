"""`python -m experiments.truncation.report`: REPORT.md and figures from a truncation-study sweep.

Reads the sweep's child runs back from MLflow, scores each job's best checkpoint on its test
split (`measure`), and writes experiments/truncation/REPORT.md with the heat-map of excess loss
(distance × truncation), the gradient-decay figure and the tables; the same files go to the
sweep's parent run and each job's scores to its own run (`test_dependent_excess_loss`, ...).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig

from experiments.truncation import figures
from experiments.truncation.measure import Cell, initial_decay, measure
from rnnexp import cli, tracking
from rnnexp.errors import UserError
from rnnexp.tracking.tables import markdown_table

log = logging.getLogger(__name__)

HEATMAP = "excess_heatmap.png"
DECAY = "gradient_decay.png"
LEARNT_EXCESS = 0.1  # nats per dependent target: below it a distance counts as learnt
SETUP_PARAMS = ("dataset.vocab_size", "model.hidden_dim", "optim.name", "optim.lr", "train.epochs", "train.batch_size", "seed",
                "dataset.synthetic.n_sentences", "dataset.synthetic.n_keys", "dataset.synthetic.max_words")


def find_sweep(client: MlflowClient, experiment_name: str, run_id: str | None) -> Run:
    """The sweep's parent run: `run_id`, else the newest sweep of the experiment."""
    if run_id:
        return tracking.get_run(client, run_id)
    experiment = client.get_experiment_by_name(experiment_name)
    sweeps = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], "tags.sweep = 'true'", order_by=["attributes.start_time DESC"], max_results=1)
    if not sweeps:
        raise UserError(f"no sweep in the MLflow experiment {experiment_name!r} of {client.tracking_uri}: "
                        "run `python -m rnnexp.run experiment=truncation_study -m` first.")
    return sweeps[0]


def children(client: MlflowClient, parent: Run) -> list[Run]:
    runs = client.search_runs([parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
    if not runs:
        raise UserError(f"sweep {parent.info.run_id} has no jobs yet: wait for it, or name another with sweep_run_id=...")
    return runs


def fmt(value: float, digits: int = 2, style: str = "f") -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}{style}}"


def grid_table(cells: Sequence[Cell], value: str, digits: int = 2, style: str = "f") -> str:
    distances, settings, table = figures.grid(cells, value)
    rows = [[f"d = {d}", *(fmt(v, digits, style) for v in table[i])] for i, d in enumerate(distances)]
    return markdown_table(["distance", *settings], rows)


def longest_learnt(cells: Sequence[Cell]) -> list[list[str]]:
    """Per setting: the distances learnt (excess below LEARNT_EXCESS) and the longest of them."""
    rows = []
    _, settings, _ = figures.grid(cells, "dependent_excess")
    for setting in settings:
        mine = sorted((c for c in cells if c.setting == setting), key=lambda c: c.distance)
        learnt = [c.distance for c in mine if c.dependent_excess < LEARNT_EXCESS]
        rows.append([setting, ", ".join(map(str, learnt)) or "none", str(max(learnt, default="—")),
                     fmt(sum(c.minutes for c in mine), 1)])
    return rows


def is_learnt(cell: Cell) -> bool:
    return cell.dependent_excess < LEARNT_EXCESS


def distances_text(cells: Sequence[Cell]) -> str:
    return ", ".join(str(c.distance) for c in cells)


def answer(cells: Sequence[Cell], n_keys: int, vocab_size: int) -> str:
    """The measured answer in sentences, derived from the cells."""
    full = [c for c in cells if c.full_bptt]
    learnt = [c for c in full if is_learnt(c)]
    failed = [c for c in full if not is_learnt(c)]
    reach = f"at d = {distances_text(learnt)}" if learnt else "at no distance tried"
    if failed:
        reach += f"{' and not' if learnt else ','} at d = {distances_text(failed)}"
    lines = [f"- **Full BPTT** learns the dependency {reach} (learnt: excess below {LEARNT_EXCESS} nats per dependent target)."]
    if failed:
        stuck = ", ".join(f"{fmt(c.dependent_excess)} (echo accuracy {fmt(c.echo_accuracy)}) at d = {c.distance}" for c in failed)
        lines.append(f"- Where it fails the excess is {stuck}, against ln {n_keys} = {math.log(n_keys):.2f} and accuracy "
                     f"1/{n_keys} for a model that knows *when* the echo comes but not *which* key it echoes.")
    unstable = [c for c in learnt if c.final_val_excess >= LEARNT_EXCESS]
    if unstable:
        listed = ", ".join(f"d = {c.distance} (best checkpoint {fmt(c.dependent_excess)} on test; validation by epoch "
                           f"{' '.join(fmt(v, 1) for v in c.val_excess)}; W's spectral radius {fmt(c.spectral_radius, 1)})"
                           for c in unstable)
        spike = ""
        if any(c.peak_val_excess > math.log(vocab_size) for c in unstable):
            spike = (f", the loss on the echo spiking above ln V = {math.log(vocab_size):.2f} (the mark of an exploding "
                     "gradient under plain SGD without clipping)")
        lines.append(f"- **Learnt, not held**: {listed}. The skill comes and goes between epochs{spike}: the answer "
                     "holds for the best checkpoint, not for every epoch.")
    learnt_distances = {c.distance for c in learnt}
    for mode in ("window", "chunk"):
        within = [c for c in cells if c.truncation == mode and not c.full_bptt and c.distance in learnt_distances]
        if within:
            lines.append(truncation_line(mode, within, [c for c in cells if c.truncation == mode and not c.full_bptt
                                                        and c.distance not in learnt_distances and is_learnt(c)]))
    blind = [c for c in cells if c.distance in learnt_distances and not figures.gradient_can_reach(c)]
    best = [max((c for c in blind if c.distance == d), key=lambda c: c.echo_accuracy) for d in sorted({c.distance for c in blind})]
    above_chance = [c for c in best if c.echo_accuracy > 1 / n_keys]
    if above_chance:
        listed = ", ".join(f"{fmt(c.echo_accuracy)} ({c.setting}) at d = {c.distance}" for c in above_chance)
        lines.append(f"- Without a gradient path to the key the echo is still guessed above chance (1/{n_keys}): best "
                     f"{listed}. The recurrent state keeps a trace of the key that the output weights learn to read, "
                     "though the echo's error never reaches the key.")
    minutes = {setting: sum(c.minutes for c in cells if c.setting == setting) for setting in figures.grid(cells, "minutes")[1]}
    if "full" in minutes:
        parts = []
        for mode in ("window", "chunk"):
            mine = [m for setting, m in minutes.items() if setting.startswith(mode)]
            if mine:
                parts.append(f"{mode} settings {min(mine):.1f} to {max(mine):.1f}"
                             + (" (none faster)" if min(mine) >= minutes["full"] else ""))
        others = "".join(f", {part}" for part in parts)
        lines.append(f"- **Time**: the full-BPTT jobs trained in {minutes['full']:.1f} minutes in all{others} "
                     "(wall-clock on a shared machine, so rough).")
    return "\n".join(lines)


def truncation_line(mode: str, within: Sequence[Cell], beyond: Sequence[Cell]) -> str:
    """What one truncation mode loses of full BPTT's distances, split by whether the gradient reaches the key."""
    lost = [c for c in within if not is_learnt(c)]
    path = [c for c in within if figures.gradient_can_reach(c)]
    line = (f"- **{mode.capitalize()} truncation** loses {len(lost)} of the {len(within)} cells that full BPTT learns. "
            f"With a gradient path to the key it learns {sum(map(is_learnt, path))} of {len(path)}, without one "
            f"{sum(is_learnt(c) for c in within if c not in path)} of {len(within) - len(path)}")
    if lost:
        line += ". Lost: " + ", ".join(f"{c.setting} at d = {c.distance} ({fmt(c.dependent_excess)})" for c in lost)
    if beyond:
        line += "; learnt where full BPTT fails: " + ", ".join(f"{c.setting} at d = {c.distance}" for c in beyond)
    return line + "."


def render(cells: Sequence[Cell], parent: Run, experiment_name: str, setup: dict[str, str], seconds: float) -> str:
    n_keys = int(setup["dataset.synthetic.n_keys"])
    failed = [c for c in cells if c.status != "FINISHED"]
    details = [[str(c.distance), c.setting, c.status, fmt(c.dependent_excess), fmt(c.echo_accuracy), fmt(c.other_excess, 3),
                fmt(c.final_val_excess), fmt(c.peak_val_excess), fmt(c.spectral_radius, 1), fmt(c.gradient_reach, 1, "e"),
                str(c.updates), fmt(c.tokens_per_sec, 0), fmt(c.minutes, 1), c.run_id]
               for c in sorted(cells, key=lambda c: (c.distance, figures.setting_order(c)))]
    setup_line = ", ".join(f"`{key}={setup[key]}`" for key in SETUP_PARAMS if key in setup)
    minutes = sum(c.minutes for c in cells if not math.isnan(c.minutes))
    wall = (parent.info.end_time - parent.info.start_time) / 60_000 if parent.info.end_time else math.nan
    return f"""# How far back can the tutorial's RNN learn a dependency, and what does truncation cost?

Generated by `make truncation-study` (`python -m rnnexp.run experiment=truncation_study -m`, then
`python -m experiments.truncation.report`) from sweep `{parent.info.run_id}` (MLflow experiment
`{experiment_name}`), commit `{parent.data.tags.get("git_commit", "unknown")[:12]}`:
{len(cells)} jobs ({len(failed)} failed), {minutes:.0f} job-minutes of training in {fmt(wall, 0)} minutes of wall-clock time
(2 jobs at a time on a 2-core machine shared with other work), report in {seconds:.0f} s.

**Task.** The synthetic language's first word is one of {n_keys} keys; the word `d` positions later is that
key's echo, certain once the key is known (oracle loss 0). Every other word follows a sparse class grammar.
Each job trains the tutorial's RNN (SGD, no biases) with one truncation setting; the numbers are its best
checkpoint (lowest validation loss) on the test split; each cell is one run (one seed), so a value near the
0.1-nat threshold could fall on the other side with another seed. Setup: {setup_line}.

**Truncation settings.** *window k*: the tutorial's truncation, each output's error flows back k steps,
sentence by sentence. *full*: window mode with k larger than any sentence, which is exactly full BPTT.
*chunk k*: the training stream is read k steps at a time with the hidden state carried over, the
gradient stopping at chunk borders. The echo's error reaches the step that read the key (d - 1 steps
back) when k >= d - 1 (window) or, for the echoes whose key falls in the same chunk, when k >= d (chunk).
All settings see the same epochs of data, but an update takes {setup["train.batch_size"]} sentences in window mode and
{setup["train.batch_size"]} × k tokens in chunk mode: short chunks make many small steps, long chunks few (the *updates* column).

## The answer

{answer(cells, n_keys, int(setup["vocab_size_actual"]))}

Reference levels: 0 = the dependency is fully learnt; ln {n_keys} = {math.log(n_keys):.2f} = the position of the echo is
known but not the key; ln V = {math.log(float(setup.get("vocab_size", "nan"))):.2f} = nothing known.

![excess loss heat-map]({HEATMAP})

## Excess loss on the dependent targets (nats per target, test split)

{grid_table(cells, "dependent_excess")}
## Echo accuracy (share of echo targets that are the model's first guess; 1/{n_keys} = guessing the key)

{grid_table(cells, "echo_accuracy")}
## Gradient reach of the trained models

Mean ||∂L_t/∂s_(t-(d-1))|| over mean ||∂L_t/∂s_t|| on test sentences, following the full chain whatever the
training truncation: how much of an output's error would survive the trip from the echo back to the key.
The figure shows the whole decay with k for the full-BPTT models, and for the untrained network they all
start from: the vanishing gradient that training has to overcome.

{grid_table(cells, "gradient_reach", 1, "e")}
![gradient decay]({DECAY})

## Distances learnt per setting

{markdown_table(["setting", f"distances learnt (excess < {LEARNT_EXCESS})", "longest", "training minutes (all d)"], longest_learnt(cells))}
## Every job

{markdown_table(["d", "setting", "status", "dependent excess", "echo accuracy", "other excess", "last val excess",
                 "peak val excess", "ρ(W)", "gradient reach", "updates", "tokens/s", "minutes", "run id"], details)}
*dependent excess*, *echo accuracy*, *other excess*: the best checkpoint on the test split. *other excess*:
loss above the oracle on all other targets (the grammar), the control: where it is similar across settings,
their differences in dependent excess are about memory, not about how well the rest of the language was
learnt. *last* and *peak val excess*: the job's own `dependent_excess_loss` on the validation split at its
last evaluation and at its worst after the first epoch (above ln V: a gradient explosion). *ρ(W)*: the
spectral radius of W at the last evaluation (`w_spectral_radius`).
"""


def log_to_mlflow(client: MlflowClient, parent: Run, cells: Sequence[Cell], report_dir: Path) -> None:
    for cell in cells:
        if cell.status == "FINISHED":
            run = tracking.RunLogger(client, cell.run_id)
            run.log_metrics({"test_dependent_excess_loss": cell.dependent_excess, "test_echo_accuracy": cell.echo_accuracy,
                             "test_other_excess_loss": cell.other_excess, "gradient_reach": cell.gradient_reach}, 0)
            run.flush()
    for name in ("REPORT.md", HEATMAP, DECAY):
        client.log_artifact(parent.info.run_id, str(report_dir / name), "truncation_study")


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
@cli.reports_user_errors
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    client = tracking.connect(tracking.resolve_tracking_uri(cfg.tracking_uri))
    parent = find_sweep(client, cfg.experiment_name, cfg.sweep_run_id)
    runs = children(client, parent)
    corpora: dict = {}
    cells = sorted((measure(client, run, Path(cfg.checkpoint_dir).resolve(), corpora) for run in runs),
                   key=lambda c: (c.distance, figures.setting_order(c)))
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if not finished:
        raise UserError(f"no job of sweep {parent.info.run_id} finished: see their failure_reason tags in MLflow.")
    setup = finished[0].data.params
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    figures.excess_heatmap(cells, ceiling=math.log(int(setup["dataset.vocab_size"]))).savefig(report_dir / HEATMAP, dpi=120)
    initial = initial_decay(setup, corpora[min(corpora)].splits["test"])
    figures.decay_figure(cells, initial).savefig(report_dir / DECAY, dpi=120)
    (report_dir / "REPORT.md").write_text(render(cells, parent, cfg.experiment_name, setup, time.perf_counter() - started))
    log_to_mlflow(client, parent, cells, report_dir)
    log.info("wrote %s for sweep %s (%d jobs)", report_dir / "REPORT.md", parent.info.run_id, len(cells))


if __name__ == "__main__":
    cli.guard(main)
