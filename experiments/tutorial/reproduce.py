"""`python -m experiments.tutorial.reproduce`: measure every claim of the tutorial and write REPORT.md.

    python -m experiments.tutorial.reproduce                          # make reproduce (quick)
    python -m experiments.tutorial.reproduce mode=full                # make reproduce-full (hours)
    python -m experiments.tutorial.reproduce claims=[step_time]       # one claim (a partial report)
    python -m experiments.tutorial.reproduce dataset_path=null        # the full CSV, found or downloaded

Each claim is a child run of one MLflow run `reproduce-<mode>` in the experiment `tutorial`; the
report and its figures are logged to that run too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import DictConfig

from experiments import provenance
from experiments.tutorial import published, report, runs
from experiments.tutorial.data_stats import data_statistics, is_full_file
from experiments.tutorial.epoch_time import epoch_time
from experiments.tutorial.extra_claims import encoding_claim, halving_claim, total_loss_claim
from experiments.tutorial.gradient_check import gradient_check
from experiments.tutorial.result import ClaimResult
from experiments.tutorial.samples import samples_claim
from experiments.tutorial.sgd_curve import sgd_curve
from experiments.tutorial.step_time import step_time
from experiments.tutorial.untrained_loss import untrained_loss
from rnnexp import cli, config, tracking
from rnnexp.data import Corpus, load_corpus
from rnnexp.errors import UserError
from rnnexp.tracking import trained

log = logging.getLogger(__name__)
MODULE = "experiments.tutorial.reproduce"


@dataclass
class Reproduction:
    """What the claims share: the configs, the corpus, the MLflow store and the training runs done."""

    cfg: DictConfig
    tutorial: config.RunConfig
    corpus: Corpus
    client: MlflowClient
    tracking_uri: str
    parent: tracking.RunLogger
    report_dir: Path
    trained_runs: dict[str, str] = field(default_factory=dict)  # experiment overlay -> MLflow run id
    corpora: dict[str, Corpus] = field(default_factory=dict)  # experiment overlay -> its corpus

    def overrides(self, experiment: str) -> list[str]:
        return runs.runner_overrides(experiment, self.cfg.dataset_path, list(self.cfg.overrides))

    def runner(self, experiment: str) -> config.RunConfig:
        return runs.runner_config(self.overrides(experiment))

    def corpus_of(self, experiment: str) -> Corpus:
        """The data `experiment=<experiment>` trains on (from the runner's cache once it has run)."""
        if experiment not in self.corpora:
            run_cfg = self.runner(experiment)
            self.corpora[experiment] = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
        return self.corpora[experiment]

    def trained_run(self, experiment: str) -> str:
        """The run id of `python -m rnnexp.run experiment=<experiment>`, trained once per reproduction."""
        if experiment not in self.trained_runs:
            run_cfg = self.runner(experiment)
            self.trained_runs[experiment] = runs.train(
                self.client,
                run_cfg.experiment_name,
                run_cfg.run_name,
                self.overrides(experiment),
                self.tracking_uri,
                self.parent.run_id,
            )
        return self.trained_runs[experiment]

    def model_experiment(self) -> str:
        """The run claim 7 samples from: the full-data model in full mode, else claim 5's."""
        return self.cfg.mode.full_experiment or self.cfg.mode.sgd_experiment

    def command(self, claim: str) -> str:
        kept = [o for o in HydraConfig.get().overrides.task if not o.startswith("claims=")]
        return runs.command_line(MODULE, [*kept, f"claims=[{claim}]"])


def claim_data(r: Reproduction) -> ClaimResult:
    return data_statistics(r.corpus, Path(r.corpus.source), r.command("data"))


def claim_untrained_loss(r: Reproduction) -> ClaimResult:
    m = r.tutorial.model
    return untrained_loss(r.corpus, m.hidden_dim, m.bptt_truncate, r.command("untrained_loss"))


def claim_gradient_check(r: Reproduction) -> ClaimResult:
    command = (
        f"{r.command('gradient_check')}; python -m rnnexp.check_gradients vocab_size=100 model.hidden_dim=10 "
        "model.truncation=window model.bptt_truncate=4 seq_len=12"
    )
    return gradient_check(r.cfg.seed, command)


def claim_step_time(r: Reproduction) -> ClaimResult:
    mode, m = r.cfg.mode, r.tutorial.model
    sentence = r.corpus.splits["train"].sentences[published.TIMED_SENTENCE_INDEX]
    return step_time(
        sentence,
        mode.timing_vocab_size,
        mode.timing_hidden_dim,
        m.bptt_truncate,
        r.tutorial.optim.lr,
        r.cfg.seed,
        mode.step_rounds,
        mode.round_seconds,
        r.report_dir,
        r.command("step_time"),
    )


def claim_sgd_curve(r: Reproduction) -> ClaimResult:
    experiment = r.cfg.mode.sgd_experiment
    run_id = r.trained_run(experiment)
    run_cfg, corpus = r.runner(experiment), r.corpus_of(experiment)
    m = run_cfg.model
    training = runs.command_line("rnnexp.run", r.overrides(experiment))
    return sgd_curve(
        r.client,
        run_id,
        corpus.splits["train"].sentences,
        len(corpus.vocab),
        m.hidden_dim,
        m.bptt_truncate,
        run_cfg.optim.lr,
        run_cfg.schedule.evaluate_loss_after,
        run_cfg.schedule.gamma,
        r.report_dir,
        training,
        r.command("sgd_curve"),
    )


def claim_epoch_time(r: Reproduction) -> ClaimResult:
    mode, m = r.cfg.mode, r.tutorial.model
    measured = runs.epoch_seconds(r.client, r.trained_run(mode.full_experiment)) if mode.full_experiment else None
    return epoch_time(
        r.corpus.splits["train"].sentences,
        r.corpus.stats["sentences_parsed"],
        is_full_file(Path(r.corpus.source)),
        mode.timing_vocab_size,
        mode.timing_hidden_dim,
        m.bptt_truncate,
        r.tutorial.optim.lr,
        r.cfg.seed,
        mode.epoch_sample,
        mode.epoch_repeats,
        mode.engine_sample,
        mode.engine_repeats,
        measured,
        r.report_dir,
        r.command("epoch_time"),
    )


def claim_samples(r: Reproduction) -> ClaimResult:
    experiment, mode = r.model_experiment(), r.cfg.mode
    run_id = r.trained_run(experiment)
    run_cfg, corpus = r.runner(experiment), r.corpus_of(experiment)
    model = trained.load(r.client, run_id, "last", runs.PROJECT_ROOT / run_cfg.train.checkpoint_dir)
    trained_on = (
        f"run {run_id} (`{runs.command_line('rnnexp.run', r.overrides(experiment))}`: "
        f"{len(corpus.splits['train']):,} sentences, {run_cfg.train.epochs} epochs, "
        f"H={run_cfg.model.hidden_dim})"
    )
    result = samples_claim(
        model.model,
        model.vocab,
        r.cfg.seed,
        mode.samples,
        mode.sample_min_words,
        mode.sample_max_words,
        trained_on,
        corpus.stats["train.unknown_fraction"],
        corpus.splits["train"].sentences,
        r.command("samples"),
    )
    result.run_id = run_id
    return result


MEASURE: dict[str, Callable[[Reproduction], ClaimResult]] = {
    "data": claim_data,
    "untrained_loss": claim_untrained_loss,
    "gradient_check": claim_gradient_check,
    "step_time": claim_step_time,
    "sgd_curve": claim_sgd_curve,
    "epoch_time": claim_epoch_time,
    "samples": claim_samples,
    "encoding": lambda r: encoding_claim(r.corpus, r.command("encoding")),
    "lr_halving": lambda r: halving_claim(r.corpus, r.command("lr_halving")),
    "total_loss": lambda r: total_loss_claim(r.corpus, r.command("total_loss")),
}


def measure(r: Reproduction, name: str) -> ClaimResult:
    """One claim as a child run of the reproduction: its params, metrics and figures."""
    child = tracking.create_run(
        r.client, r.tutorial.experiment_name, f"claim-{name}", r.parent.run_id, tracking.environment_tags()
    )
    with tracking.run_status(child):
        log.info("claim %s ...", name)
        result = MEASURE[name](r)
        child.log_params({"claim": str(result.number), "verdict": result.verdict, **result.params})
        child.log_metrics(result.metrics, step=0)
        if result.run_id:
            child.set_tags({"training_run_id": result.run_id})
        for figure in result.figures:
            child.log_artifact(r.report_dir / figure)
        log.info("claim %d: %s (%s)", result.number, result.verdict, result.reproduced)
    return result


def data_note(corpus: Corpus) -> str:
    source = Path(corpus.source)
    if is_full_file(source):
        return "The full tutorial CSV."
    return (
        f"The shared excerpt ({source.stat().st_size:,} bytes: the first {corpus.stats['comments']} complete "
        f"comments of the {published.FULL_CSV_BYTES:,}-byte file, which cannot be downloaded offline). This "
        "changes claim 1 (its counts are the excerpt's, and the 8000-word vocabulary is clamped to the "
        f"excerpt's {len(corpus.vocab):,} words) and claim 6 (the epoch is projected to the full file's size "
        "instead of measured); claims 2 and 5 run at the smaller V, which the report accounts for."
    )


def relative_uri(uri: str) -> str:
    """A sqlite store named relative to the project (the report must not record this machine's paths)."""
    prefix = "sqlite:///"
    return prefix + provenance.relative(uri[len(prefix) :]) if uri.startswith(prefix) else uri


@hydra.main(version_base="1.3", config_path="conf", config_name="reproduce")
def main(cfg: DictConfig) -> None:
    unknown = [name for name in cfg.claims if name not in MEASURE]
    if unknown:
        raise UserError(f"unknown claim(s) {', '.join(unknown)}: choose from {', '.join(MEASURE)}.")
    tutorial = runs.runner_config(runs.runner_overrides(cfg.experiment, cfg.dataset_path, list(cfg.overrides)))
    corpus = load_corpus(tutorial.dataset, seed=tutorial.seed)
    uri = tracking.resolve_tracking_uri(cfg.tracking_uri)
    client = tracking.connect(uri)
    parent = tracking.create_run(
        client,
        tutorial.experiment_name,
        f"reproduce-{cfg.mode.name}",
        None,
        {**tracking.environment_tags(), "dataset_digest": corpus.digest},
    )
    load_at_start, started = os.getloadavg()[0], time.monotonic()
    report_dir = runs.PROJECT_ROOT / cfg.report_dir if not Path(cfg.report_dir).is_absolute() else Path(cfg.report_dir)
    with tracking.run_status(parent):
        parent.log_params({"mode": cfg.mode.name, "claims": ",".join(cfg.claims), "data_file": corpus.source})
        r = Reproduction(cfg, tutorial, corpus, client, uri, parent, report_dir)
        results = [measure(r, name) for name in cfg.claims]
        task = HydraConfig.get().overrides.task
        info = report.RunInfo(
            mode=cfg.mode.name,
            command=runs.command_line(MODULE, list(task)),
            data_file=os.path.relpath(os.path.normpath(corpus.source), runs.PROJECT_ROOT),
            data_note=data_note(corpus),
            tracking_uri=relative_uri(uri),
            parent_run_id=parent.run_id,
            provenance=provenance.provenance(["experiments/tutorial", "experiments/provenance.py"]).markdown(),
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            load=f"load average (1 min) {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
            minutes=(time.monotonic() - started) / 60,
        )
        path = report.write(results, info, report_dir / "REPORT.md")
        parent.log_artifact(path)
        parent.log_metrics({"claims_passed": sum(r.passed for r in results), "claims": len(results)}, step=0)
        log.info("wrote %s: %d of %d claims hold here", path, sum(res.passed for res in results), len(results))


if __name__ == "__main__":
    cli.guard(main)
