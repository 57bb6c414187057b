"""`python -m experiments.truncation.report`: REPORT.md and figures from a truncation-study sweep.

Reads the sweep's child runs back from MLflow, takes each job's setup from its saved
`config.yaml` artifact, scores its best checkpoint on the test split under the protocol it was
trained for (`measure`), groups the jobs by (distance, setting) over their seeds, and writes
REPORT.md with the heat-map of mean excess loss and its 95% intervals, the verdicts and how
they differ from the single-seed study, and the tables; with `grid_experiment`, also the fair
protocol's learning-rate grid and its cells against the fixed-rate ones (`fair`). The same files
go to the sweep's parent run and each job's scores to its own run (`test_dependent_excess_loss`, ...).
"""

from __future__ import annotations

import json
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

from experiments import provenance
from experiments.truncation import fair, figures, grid
from experiments.truncation.measure import (
    FAIR_SUFFIX,
    LEARNT_EXCESS,
    Cell,
    Job,
    cells_of,
    initial_decay,
    measure,
    run_config,
    unique_jobs,
)
from experiments.truncation.text import fmt, interval_text
from rnnexp import cli, tracking
from rnnexp.config import RunConfig
from rnnexp.data import load_corpus
from rnnexp.errors import UserError
from rnnexp.tracking.tables import markdown_table

log = logging.getLogger(__name__)

HEATMAP = "excess_heatmap.png"
DECAY = "gradient_decay.png"
SINGLE_SEED = Path(__file__).with_name("single_seed_study.json")
CODE = ("experiments/truncation", "experiments/provenance.py")


def find_sweep(client: MlflowClient, experiment_name: str, run_id: str | None) -> Run:
    """The sweep's parent run: `run_id`, else the newest sweep of the experiment."""
    if run_id:
        return tracking.get_run(client, run_id)
    experiment = client.get_experiment_by_name(experiment_name)
    sweeps = (
        []
        if experiment is None
        else client.search_runs(
            [experiment.experiment_id], "tags.sweep = 'true'", order_by=["attributes.start_time DESC"], max_results=1
        )
    )
    if not sweeps:
        raise UserError(
            f"no sweep in the MLflow experiment {experiment_name!r} of {client.tracking_uri}: "
            f"run `python -m rnnexp.run experiment={experiment_name} -m` first."
        )
    return sweeps[0]


def children(client: MlflowClient, parent: Run) -> list[Run]:
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'", max_results=5000
    )
    if not runs:
        raise UserError(
            f"sweep {parent.info.run_id} has no jobs yet: wait for it, or name another with sweep_run_id=..."
        )
    return runs


def grid_table(cells: Sequence[Cell], render) -> str:
    distances, settings, at = figures.grid(cells)
    rows = [[f"d = {d}", *(render(at[(d, s)]) if (d, s) in at else "" for s in settings)] for d in distances]
    return markdown_table(["distance", *settings], rows)


def single_seed_verdicts() -> dict[tuple[int, str], float]:
    """The old study's excess per (distance, setting); its `window 64` was full BPTT."""
    saved = json.loads(SINGLE_SEED.read_text())
    return {
        (int(d), "full" if s == "window 64" else s): v
        for d, row in saved["dependent_excess"].items()
        for s, v in row.items()
    }


def changed_verdicts(cells: Sequence[Cell]) -> tuple[list[list[str]], int]:
    """Cells in both studies: the single-seed verdict (excess < 0.1) against the interval's; and how many compared."""
    old = single_seed_verdicts()
    rows, compared = [], 0
    for cell in cells:
        if (cell.distance, cell.setting) not in old:
            continue
        compared += 1
        before = "learnt" if old[(cell.distance, cell.setting)] < LEARNT_EXCESS else "not learnt"
        if before != cell.verdict:
            rows.append(
                [
                    f"d = {cell.distance}",
                    cell.setting,
                    f"{old[(cell.distance, cell.setting)]:.2f} ({before})",
                    f"{interval_text(cell)} ({cell.verdict}, {cell.seeds_learnt}/{len(cell.finished)} seeds)",
                ]
            )
    return rows, compared


def verdicts_by_distance(cells: Sequence[Cell]) -> str:
    by_verdict = {v: [c.distance for c in cells if c.verdict == v] for v in ("learnt", "not learnt", "undecided")}
    return "; ".join(f"{verdict} at d = {', '.join(map(str, ds))}" for verdict, ds in by_verdict.items() if ds)


def answer(cells: Sequence[Cell], n_keys: int) -> str:
    """The measured answer in sentences, from the verdicts: full BPTT under the fair protocol where it ran
    (beside the fixed rate's), truncation at the fixed rate."""
    fair_twin = {(fixed.distance, fixed.setting): cell for cell, fixed in fair.twins(cells) if fixed is not None}
    cells = [cell for cell in cells if not cell.setting.endswith(FAIR_SUFFIX)]
    lines = []
    models = dict.fromkeys(cell.setting[: -len("full")] for cell in cells if cell.setting.endswith("full"))
    for prefix in models:
        full = [c for c in cells if c.setting == f"{prefix}full"]
        fair_full = [fair_twin[(c.distance, c.setting)] for c in full if (c.distance, c.setting) in fair_twin]
        if fair_full:
            lines.append(
                f"- **{prefix or 'RNN '}full BPTT**, fair protocol (lr {fair_full[0].mean('lr'):g}, early "
                f"stopping): {verdicts_by_distance(fair_full)}. At the fixed rate: {verdicts_by_distance(full)}."
            )
        else:
            lines.append(f"- **{prefix or 'RNN '}full BPTT**: {verdicts_by_distance(full)}.")
    prefixes = dict.fromkeys(
        cell.setting.rsplit(" ", 2)[0] + " " if cell.setting.split()[0] in ("LSTM", "GRU") else "" for cell in cells
    )
    for prefix, mode in ((prefix, mode) for prefix in prefixes for mode in ("window", "chunk")):
        mine = [c for c in cells if c.setting.startswith(f"{prefix}{mode}")]
        if mine:
            path = [c for c in mine if c.reach_possible]
            blind = [c for c in mine if not c.reach_possible]
            learnt = sum(c.verdict == "learnt" for c in path)
            lines.append(
                f"- **{prefix or 'RNN '}{mode} truncation**: learnt in {learnt} of the "
                f"{len(path)} cells where training's gradient can reach the key, and in "
                f"{sum(c.verdict == 'learnt' for c in blind)} of the {len(blind)} where it cannot; "
                f"undecided in {sum(c.verdict == 'undecided' for c in mine)}."
            )
    judged = [fair_twin.get((c.distance, c.setting), c) for c in cells if c.setting.endswith("full")]
    stuck = [c for c in judged if c.verdict == "not learnt"]
    if stuck:
        listed = ", ".join(
            f"{c.setting} at d = {c.distance}: {interval_text(c)}, echo accuracy {fmt(c.mean('echo_accuracy'))}"
            for c in stuck
        )
        lines.append(
            f"- Where full BPTT fails: {listed}; ln {n_keys} = {math.log(n_keys):.2f} and accuracy 1/{n_keys} "
            "are a model that knows *when* the echo comes but not *which* key it echoes."
        )
    return "\n".join(lines)


def per_setting(cells: Sequence[Cell]) -> list[list[str]]:
    _, settings, at = figures.grid(cells)
    rows = []
    for setting in settings:
        mine = sorted((c for c in cells if c.setting == setting), key=lambda c: c.distance)
        learnt = [c.distance for c in mine if c.verdict == "learnt"]
        rows.append(
            [
                setting,
                ", ".join(map(str, learnt)) or "none",
                ", ".join(str(c.distance) for c in mine if c.verdict == "undecided") or "none",
                str(round(sum(c.mean("updates") for c in mine) / len(mine))),
                fmt(sum(c.mean("tokens_per_update") for c in mine) / len(mine), 0),
                fmt(sum(c.minutes for c in mine), 1),
                mine[0].finished[0].protocol if mine[0].finished else "—",
            ]
        )
    return rows


def sweep_minutes(parent: Run) -> float:
    return (parent.info.end_time - parent.info.start_time) / 60_000 if parent.info.end_time else math.nan


def render(
    cells: Sequence[Cell],
    jobs: Sequence[Job],
    parent: Run,
    experiment_name: str,
    setup: RunConfig,
    seconds: float,
    others: Sequence[Run] = (),
    also_names: Sequence[str] = (),
    lr_grid: grid.GridSweep | None = None,
) -> str:
    syn = setup.dataset.synthetic
    minutes = sum(job.minutes for job in jobs if not math.isnan(job.minutes))  # reruns trained too
    jobs, rerun_gaps = unique_jobs(jobs)
    failed = [job for job in jobs if job.status != "FINISHED"]
    reruns = (
        f" {len(rerun_gaps)} jobs ran twice (the same cell and seed in two sweeps) and count once; their "
        f"dependent excess agrees to {max(rerun_gaps):.1e}."
        if rerun_gaps
        else ""
    )
    seeds = sorted({job.seed for job in jobs})
    changed, compared = changed_verdicts(cells)
    sweep_tags = parent.data.tags
    trained_at = (
        f"`{sweep_tags.get('git_commit', 'unknown')[:12]}` (uncommitted changes: "
        f"{ {'true': 'yes', 'false': 'no'}.get(str(sweep_tags.get('git_dirty', '')).lower(), 'unknown') })"
    )
    wall = sweep_minutes(parent)
    details = [
        [
            str(j.distance),
            j.setting,
            str(j.seed),
            j.status,
            j.protocol,
            fmt(j.dependent_excess),
            fmt(j.echo_accuracy),
            fmt(j.other_excess, 3),
            fmt(j.peak_val_excess),
            fmt(j.gradient_reach, 1, "e"),
            fmt(j.lr, 2, "g"),
            f"{j.epochs}{' (early stop)' if j.stopped_early else ''}",
            str(j.updates),
            fmt(j.tokens_per_update, 0),
            fmt(j.minutes, 1),
            j.run_id,
        ]
        for j in sorted(jobs, key=lambda j: (j.distance, j.order, j.seed))
    ]
    changed_header = ["distance", "setting", "single seed (verdict)", "now: mean [95% interval] (verdict)"]
    changed_text = markdown_table(changed_header, changed) if changed else "None.\n"
    quick = experiment_name.endswith("_quick")
    sweeps = [parent, *others, *([lr_grid.sweep] if lr_grid else [])]
    grid_name = f" grid_experiment={lr_grid.experiment}" if lr_grid else ""
    which = "fixed-rate " if lr_grid else ""  # the fair settings' rates are the grid's
    total = sum(sweep_minutes(sweep) for sweep in sweeps) + seconds / 60
    also = f" also=[{','.join(also_names)}]" if also_names else ""
    joined = "".join(
        f"; joined by the jobs of sweep `{other.info.run_id}` "
        f"(`python -m rnnexp.run -m {other.data.tags.get('overrides', '')}`, trained at commit "
        f"`{other.data.tags.get('git_commit', 'unknown')[:12]}`, "
        f"{fmt(sweep_minutes(other), 0)} minutes of wall-clock time)"
        for other in others
    )
    return f"""# How far back can the tutorial's RNN learn a dependency, and what does truncation cost?

Generated by `make truncation-study{"-quick" if quick else ""}`
({"`python -m experiments.truncation.study`: the learning-rate grid, the fair sweeps, then " if lr_grid else ""}\
`python -m rnnexp.run experiment={experiment_name} -m`, then
`python -m experiments.truncation.report experiment_name={experiment_name}{also}{grid_name}`) from sweep \
`{parent.info.run_id}`
(MLflow experiment `{experiment_name}`{", the quick variant: fewer cells, the same training" if quick else ""}){joined}.
Trained at commit {trained_at}; report made at {provenance.provenance(CODE).markdown()}.
{len(jobs)} jobs ({len(failed)} failed), {minutes:.0f} job-minutes of training in {fmt(wall, 0)} minutes of wall-clock
time (2 jobs at a time through the joblib launcher, on a 2-core machine shared with other work), report in
{seconds:.0f} s.{reruns}{grid_wall(lr_grid)} The whole study: {fmt(total, 0)} minutes of wall-clock time.

**Task.** One of the first {syn.key_positions} words of each sentence (uniformly) is one of {syn.n_keys} keys; the word
`d` positions after it is that key's echo, certain once the key is known (oracle loss 0). Every other word follows a
sparse class grammar. Sentences hold {syn.min_words} to {syn.max_words} words (mean about {syn.mean_words:g}) at every
distance, so neither the key's position nor the sentence's length tells `d`
(`dataset.synthetic.key_positions={syn.key_positions}`).

**Training.** Each job trains one setting from one seed: {len(seeds)} seeds per cell ({", ".join(map(str, seeds))}),
each a different initialisation and data order on the same language (`dataset.synthetic.seed={syn.seed}`); SGD at
`lr={setup.optim.lr:g}` for every {which}setting (not tuned per mode), gradients clipped to a global L2 norm of
`optim.clip_norm={setup.optim.clip_norm}`, {setup.train.epochs} epochs, `hidden_dim={setup.model.hidden_dim}`,
`vocab_size={setup.dataset.vocab_size}`, {syn.n_sentences} sentences. **Equal tokens per update**: window and full
settings take {setup.train.batch_size} sentences per update, chunk k takes {setup.train.batch_size} × (mean sentence
length) / k streams of k steps, so every setting makes about the same number of updates of about the same size (see
*updates* below). Scores come from each job's best checkpoint (lowest validation loss) on the test split, under the
protocol it trained for: *sentence* (each sentence from a zero state) for window and full BPTT, *stateful* (the split as
one stream, the state carried) for chunk training.

**Settings.** *window k*: the tutorial's truncation, each output's error flows back k steps, sentence by sentence.
*full*: full BPTT over each sentence. *chunk k*: the training stream is read k steps at a time with the hidden state
carried over, the gradient stopping at chunk borders. The echo's error reaches the step that read the key (d - 1 steps
back) when k >= d - 1 (window) or, for the echoes whose key falls in the same chunk, when k >= d (chunk): bold in the
heat-map. *LSTM* and *GRU*: one-layer gated cells of the same width, trained the same way.

**Verdicts.** A cell is *learnt* when the 95% Student-t interval of its mean dependent excess over the seeds lies
wholly below {LEARNT_EXCESS} nats, *not learnt* when it lies wholly above, *undecided* otherwise.

## The answer

{answer(cells, syn.n_keys)}
{fair.sections(cells, lr_grid, setup.train.epochs) if lr_grid else ""}

Reference levels: 0 = the dependency is fully learnt; ln {syn.n_keys} = {math.log(syn.n_keys):.2f} = the position of the
echo is known but not the key; ln V = {math.log(setup.dataset.vocab_size):.2f} = nothing known.

![excess loss heat-map with 95% intervals]({HEATMAP})

## Excess loss on the dependent targets: mean [95% t interval] over the seeds (nats per target, test split)

{grid_table(cells, interval_text)}
## Verdicts (seeds learnt individually, excess < {LEARNT_EXCESS})

{grid_table(cells, lambda c: f"{c.verdict} ({c.seeds_learnt}/{len(c.finished)})")}
## Verdicts that changed from the single-seed study

The single-seed study ({json.loads(SINGLE_SEED.read_text())["source"]}) counted a cell learnt when its one run's excess
was below {LEARNT_EXCESS}. Of the {compared} cells both studies ran, these have another verdict now (the task, the
training and the chunk protocol changed too, so a change is not only the seeds):

{changed_text}
## Echo accuracy, mean over the seeds (echo targets that are the model's first guess; 1/{syn.n_keys} = guessing)

{grid_table(cells, lambda c: fmt(c.mean("echo_accuracy")))}
## The control: excess loss on all other targets, mean over the seeds (the grammar)

Where it is similar across settings, their differences in dependent excess are about memory, not about how well the
rest of the language was learnt.

{grid_table(cells, lambda c: fmt(c.mean("other_excess"), 3))}
## Gradient reach of the trained models, mean over the seeds

Mean ||∂L_t/∂s_(t-(d-1))|| over mean ||∂L_t/∂s_t|| on test sentences, following the full chain whatever the training
truncation: how much of an output's error would survive the trip from the echo back to the key.

{grid_table(cells, lambda c: fmt(c.mean("gradient_reach"), 1, "e"))}
![gradient decay]({DECAY})

## Per setting

{
        markdown_table(
            [
                "setting",
                "distances learnt",
                "undecided",
                "updates (mean)",
                "tokens per update",
                "training minutes",
                "protocol",
            ],
            per_setting(cells),
        )
    }
## Every job

{
        markdown_table(
            [
                "d",
                "setting",
                "seed",
                "status",
                "protocol",
                "dependent excess",
                "echo accuracy",
                "other excess",
                "peak val excess",
                "gradient reach",
                "lr",
                "epochs",
                "updates",
                "tokens/update",
                "minutes",
                "run id",
            ],
            details,
        )
    }
*dependent excess*, *echo accuracy*, *other excess*: the best checkpoint on the test split. *peak val excess*: the job's
own `dependent_excess_loss` on the validation split at its worst after the first epoch (above ln V: a gradient
explosion that clipping did not stop).
"""


def grid_wall(lr_grid: grid.GridSweep | None) -> str:
    if lr_grid is None:
        return ""
    return (
        f" The learning-rate grid: sweep `{lr_grid.sweep.info.run_id}` (MLflow experiment `{lr_grid.experiment}`), "
        f"{fmt(sweep_minutes(lr_grid.sweep), 0)} minutes of wall-clock time."
    )


def log_to_mlflow(client: MlflowClient, parent: Run, jobs: Sequence[Job], report_dir: Path) -> None:
    for job in jobs:
        if job.status == "FINISHED":
            run = tracking.RunLogger(client, job.run_id)
            run.log_metrics(
                {
                    "test_dependent_excess_loss": job.dependent_excess,
                    "test_echo_accuracy": job.echo_accuracy,
                    "test_other_excess_loss": job.other_excess,
                    "gradient_reach": job.gradient_reach,
                },
                0,
            )
            run.flush()
    for name in ("REPORT.md", HEATMAP, DECAY):
        client.log_artifact(parent.info.run_id, str(report_dir / name), "truncation_study")


def initial_decays(client: MlflowClient, jobs: Sequence[Job]) -> dict[str, tuple[float, ...]]:
    """The untrained network's decay for each cell type that ran full BPTT (from its first seed's config)."""
    decays: dict[str, tuple[float, ...]] = {}
    for job in sorted(jobs, key=lambda j: (j.order, j.seed)):
        prefix = job.setting[: -len("full")] if job.setting.endswith("full") else None
        if prefix is not None and prefix not in decays and job.status == "FINISHED":
            cfg = run_config(client, job.run_id)
            corpus = load_corpus(cfg.dataset, seed=cfg.seed)
            decays[prefix] = initial_decay(cfg, len(corpus.vocab), corpus.splits["test"])
    return decays


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
@cli.reports_user_errors
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    client = tracking.connect(tracking.resolve_tracking_uri(cfg.tracking_uri))
    parent = find_sweep(client, cfg.experiment_name, cfg.sweep_run_id)
    others = [find_sweep(client, name, None) for name in cfg.also]
    runs = [run for sweep in (parent, *others) for run in children(client, sweep)]
    lr_grid = None
    if cfg.grid_experiment:
        grid_sweep = find_sweep(client, cfg.grid_experiment, None)
        choices = grid.choose(grid.read_grid(client, children(client, grid_sweep)))
        lr_grid = grid.GridSweep(cfg.grid_experiment, grid_sweep, choices)
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if not finished:
        raise UserError(f"no job of sweep {parent.info.run_id} finished: see their failure_reason tags in MLflow.")
    corpora: dict = {}
    jobs = [measure(client, run, Path(cfg.checkpoint_dir).resolve(), corpora) for run in runs]
    cells = cells_of(jobs)
    setup = run_config(client, finished[0].info.run_id)
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    figures.excess_heatmap(cells, ceiling=math.log(setup.dataset.vocab_size)).savefig(report_dir / HEATMAP, dpi=120)
    figures.decay_figure(cells, initial_decays(client, jobs)).savefig(report_dir / DECAY, dpi=120)
    seconds = time.perf_counter() - started
    text = render(cells, jobs, parent, cfg.experiment_name, setup, seconds, others, list(cfg.also), lr_grid)
    (report_dir / "REPORT.md").write_text(text)
    log_to_mlflow(client, parent, jobs, report_dir)
    log.info("wrote %s for sweep %s (%d jobs)", report_dir / "REPORT.md", parent.info.run_id, len(jobs))


if __name__ == "__main__":
    cli.guard(main)
