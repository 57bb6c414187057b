"""The Penn Treebank benchmark: the literature's recipes, each beside its published perplexity.

    make ptb            # python -m experiments.ptb.report: trains every row, writes REPORT.md and results.json
    make ptb-medium     # ... train_rows=false train_medium=true: Zaremba's medium model, resumed after any stop

Every row is a real run (`python -m rnnexp.run experiment=<row's config>`, through the same
`tracking.train` the entry point calls) logged to MLflow with the tag `ptb_row=<key>`; its numbers
are read back from the store. `train_rows=false` rebuilds the report from the latest run of each
row; `only=[key,...]` trains just those rows and rebuilds the report from the latest run of every
row. `extra=[...]` adds overrides to every row: the tests run the whole report on a small cut.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from mlflow import MlflowClient
from mlflow.entities import Run
from nltk.util import ngrams
from omegaconf import DictConfig, OmegaConf

from benchmarks import bench_ptb_parity
from experiments.provenance import provenance, relative
from rnnexp import cli, tracking
from rnnexp.config import RunConfig, compose_run, resolve
from rnnexp.data import Corpus, load_corpus
from rnnexp.errors import UserError
from rnnexp.tracking.session import logged_config
from rnnexp.tracking.tables import markdown_table
from rnnexp.training.baseline import timed_table

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
CODE = ("experiments/ptb", "benchmarks/bench_ptb_parity.py", "benchmarks/bench_torch.py")  # what makes the numbers
ROW_TAG = "ptb_row"
MEDIUM = "lstm_medium"
TOLERANCE = 0.03  # a reproduction counts when within ±3% of the published test perplexity
OVERLAP_ORDERS = (4, 5, 6, 8)
CACHE_DYNAMIC = "CACHE_DYNAMIC.md"
CURVE_CEILING = 1000.0  # validation perplexity drawn on the figure's top edge above this


@dataclass
class Row:
    """One row of the table: a run read back from the store (None: not run yet)."""

    key: str
    spec: dict[str, Any]  # label, overrides, published_test, published_valid, source
    run: Run | None
    corpus: Corpus | None  # the data the run trained on, loaded through the cache by its logged config
    epoch_ms: list[float] = field(default_factory=list)  # each epoch's duration, from its evaluations' timestamps

    def metric(self, name: str) -> float | None:
        return None if self.run is None else self.run.data.metrics.get(name)

    @property
    def seconds_per_epoch(self) -> float | None:
        return statistics.median(self.epoch_ms) / 1000 if self.epoch_ms else None

    @property
    def seconds(self) -> float | None:
        """The run's wall time, less the time it lay stopped before a resume (an epoch 3× the median)."""
        if self.run is None or self.run.info.end_time is None:
            return None
        stopped = 0.0
        if self.epoch_ms:
            typical = statistics.median(self.epoch_ms)
            stopped = sum(ms - typical for ms in self.epoch_ms if ms > 3 * typical)
        return (self.run.info.end_time - self.run.info.start_time - stopped) / 1000

    @property
    def tokens_per_sec(self) -> float | None:
        """The run's mean training rate; a run stopped before its end logged none, so its latest rate."""
        return self.metric("tokens_per_sec_mean") or self.metric("tokens_per_sec")

    @property
    def standard(self) -> bool:
        return self.corpus is not None and bool(self.corpus.stats.get("standard_benchmark"))

    @property
    def ratio(self) -> float | None:
        test, published = self.metric("test_ppl"), self.spec.get("published_test")
        return None if test is None or published is None else test / published


def row_config(overrides: list[str], extra: list[str], uri: str, experiment_name: str) -> DictConfig:
    return compose_run(
        [
            *overrides,
            f"tracking_uri={uri}",
            f"experiment_name={experiment_name}",
            f"dataset.fallback_path={ROOT.parent / 'shared/data/ptb.valid.txt'}",
            *extra,
        ]
    )


def latest_run(client: MlflowClient, experiment_name: str, key: str) -> Run | None:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.{ROW_TAG} = '{key}'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def train_row(key: str, spec: dict, cfg: DictConfig, uri: str) -> None:
    """Train one row; the medium row continues its unfinished run (`resume=`) instead of starting again."""
    client = tracking.connect(uri)
    overrides = list(spec["overrides"])
    if key == MEDIUM:
        previous = latest_run(client, cfg.experiment_name, key)
        if previous is not None and previous.info.status == "FINISHED":
            log.info("%s: run %s already finished", key, previous.info.run_id)
            return
        if previous is not None:
            log.info("%s: resuming run %s", key, previous.info.run_id)
            overrides.append(f"resume={previous.info.run_id}")
    run_cfg = row_config(overrides, list(cfg.extra), uri, cfg.experiment_name)
    tracking.train(run_cfg, run_name=f"ptb {key}", tags={ROW_TAG: key})


def read_row(client: MlflowClient, experiment_name: str, key: str, spec: dict, corpora: dict[str, Corpus]) -> Row:
    run = latest_run(client, experiment_name, key)
    corpus = None
    if run is not None:
        digest = run.data.tags.get("dataset_digest", "")
        if digest not in corpora:
            logged = logged_config(client, run.info.run_id)
            if logged is not None:
                run_cfg: RunConfig = resolve(logged)
                corpora[digest] = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
        corpus = corpora.get(digest)
        ends = sorted(m.timestamp for m in client.get_metric_history(run.info.run_id, "epoch"))
        return Row(key, spec, run, corpus, [b - a for a, b in zip(ends, ends[1:])])
    return Row(key, spec, run, corpus)


def verdict(ratio: float | None, standard: bool) -> str:
    if ratio is None:
        return "no published figure"
    if not standard:
        return "not comparable: not the standard benchmark"
    return "reproduced (within ±3%)" if abs(ratio - 1) <= TOLERANCE else f"NOT reproduced ({100 * (ratio - 1):+.1f}%)"


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def data_label(corpus: Corpus | None) -> str:
    if corpus is None:
        return "unknown"
    return "standard" if corpus.stats.get("standard_benchmark") else "**not the standard benchmark**"


def interpolated(row: Row) -> str:
    mixed, lam = row.metric("interp_kn5_test_ppl"), row.metric("interp_kn5_lambda")
    return "" if mixed is None or lam is None else f"{mixed:.1f} (λ={lam:.2f})"


def table(rows: list[Row], kn: dict[str, Any]) -> str:
    header = [
        "row",
        "published test ppl",
        "rnnexp valid ppl",
        "rnnexp test ppl",
        "ratio",
        "verdict (±3%)",
        "+ KN5 interpolated: test ppl",
        "epochs",
        "wall time",
        "tokens/s",
        "data",
        "MLflow run",
    ]
    lines = []
    for row in rows:
        if row.run is None:
            lines.append([row.spec["label"], fmt(row.spec.get("published_test"), "g"), *["not run"] * 10])
            continue
        finished = row.run.info.status == "FINISHED"
        status = "" if finished else f" ({row.run.info.status})"
        lines.append(
            [
                f"{row.spec['label']} (`{' '.join(row.spec['overrides'])}`)",
                fmt(row.spec.get("published_test"), "g"),
                fmt(row.metric("best_val_ppl")) if row.metric("epoch") else "",  # epoch 0's is the untrained model's
                fmt(row.metric("test_ppl")),
                fmt(row.ratio, ".3f"),
                verdict(row.ratio, row.standard) if finished else "not finished",
                interpolated(row),
                f"{row.metric('epoch') or 0:.0f}{status}",
                "" if row.seconds is None else f"{row.seconds / 60:.1f} min",
                fmt(row.tokens_per_sec, ",.0f"),
                data_label(row.corpus),
                f"`{row.run.info.run_id}`",
            ]
        )
    ratio = kn["test_ppl"] / kn["published_test"]
    lines.append(
        [
            "Kneser–Ney order 5, modified, interpolated (`python -m rnnexp.ngram experiment=ptb_kn5`)",
            f"{kn['published_test']:g}",
            f"{kn['valid_ppl']:.1f}",
            f"{kn['test_ppl']:.1f}",
            f"{ratio:.3f}",
            verdict(ratio, kn["standard"]),
            "",
            "",
            f"{kn['seconds']:.1f} s",
            "",
            kn["data"],
            "",
        ]
    )
    return markdown_table(header, lines)


def notes(rows: list[Row]) -> list[str]:
    """What a row's figure needs beside it (its spec's `note`), and the commits the rows trained at."""
    lines = [f"- {row.spec['label']}: {row.spec['note']}" for row in rows if row.spec.get("note")]
    commits = sorted({row.run.data.tags.get("git_commit", "unknown")[:12] for row in rows if row.run is not None})
    if commits:
        listed = ", ".join(f"`{commit}`" for commit in commits)
        lines.append(f"- The rows trained at commit {listed} (each run's `git_commit` tag).")
    return [*lines, ""] if lines else []


def total_time(rows: list[Row], kn: dict[str, Any]) -> list[str]:
    """What `make ptb` spends training: its rows one after another (the medium row is `make ptb-medium`'s)."""
    seconds = [row.seconds for row in rows if row.key != MEDIUM]
    if not seconds or None in seconds:
        return []
    total = sum(s for s in seconds if s is not None) + kn["seconds"]
    return [f"The rows `make ptb` trains, one after another, took {total / 60:.1f} min together (KN5 included).", ""]


def class_cost(rows: list[Row]) -> list[str]:
    """The class-based output against the softmax LSTM it replaces: perplexity cost, time saved."""
    by_key = {row.key: row for row in rows}
    softmax, classed = by_key.get("lstm_wlm"), by_key.get("lstm_wlm_class")
    if softmax is None or classed is None or softmax.run is None or classed.run is None:
        return []
    ppl_a, ppl_b = softmax.metric("test_ppl"), classed.metric("test_ppl")
    tok_a, tok_b = softmax.metric("tokens_per_sec_mean"), classed.metric("tokens_per_sec_mean")
    if None in (ppl_a, ppl_b, tok_a, tok_b) or softmax.seconds is None or classed.seconds is None:
        return []
    assert ppl_a and ppl_b and tok_a and tok_b
    return [
        "## The class-based output",
        "",
        f"`model.output=class` (Mikolov's frequency classes, √V of them) on word_language_model's LSTM: test "
        f"perplexity {ppl_b:.1f} against {ppl_a:.1f} with the full softmax ({100 * (ppl_b / ppl_a - 1):+.1f}%), "
        f"training at {tok_b:,.0f} against {tok_a:,.0f} tokens/s ({tok_b / tok_a:.2f}×); the whole run took "
        f"{classed.seconds / 60:.1f} min against {softmax.seconds / 60:.1f} min.",
        "",
    ]


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def medium_section(row: Row) -> list[str]:
    """Where Zaremba's medium model stands: its epochs, its best validation against 86.2, the time left."""
    lines = ["## Zaremba et al.'s medium model (`make ptb-medium`)", ""]
    if row.run is None:
        return [*lines, "Not run yet: `make ptb-medium` trains it, and resumes it after any stop.", ""]
    epochs_planned = int(row.run.data.params.get("train.epochs", row.spec["epochs"]))
    done = int(row.metric("epoch") or 0)
    per_epoch = row.seconds_per_epoch
    left = max(0, epochs_planned - done)
    status = row.run.info.status
    text = (
        f"Run `{row.run.info.run_id}` ({status}): {done} of {epochs_planned} epochs, validation perplexity "
        f"{fmt(row.metric('best_val_ppl'))} against the published end point {row.spec['published_valid']:g} "
        f"(test {row.spec['published_test']:g})"
    )
    rate, tokens = row.tokens_per_sec, None if row.corpus is None else row.corpus.stats.get("train.targets")
    if per_epoch is not None:
        text += f"; {duration(per_epoch)} per epoch measured here"
    elif rate and tokens:  # stopped inside its first epoch: the epoch's time from the training rate it logged
        per_epoch = tokens / rate
        text += (
            f"; it trained at {rate:,.0f} tokens/s here, so an epoch of {tokens:,} tokens takes {duration(per_epoch)}"
        )
    if per_epoch is not None and left:
        text += f", and the {left} epochs left would take about {duration(left * per_epoch)}"
    text += "."
    if status != "FINISHED":
        text += " `make ptb-medium` continues it exactly where it stopped (`resume=`)."
    return [*lines, text, ""]


def curves(client: MlflowClient, rows: list[Row], path: Path) -> None:
    """Validation perplexity per trained epoch of every run, with each published end point where it was reached.

    An evaluation above CURVE_CEILING (the tanh RNN's wrong-sign starts, ~3e5) is drawn on the ceiling
    with its value beside it, so that the curves near the published figures stay readable.
    """
    figure = Figure(figsize=(8, 5))
    axis = figure.add_subplot()
    for index, row in enumerate(rows):
        if row.run is None:
            continue
        history = sorted(client.get_metric_history(row.run.info.run_id, "val_ppl"), key=lambda m: m.step)
        epochs = {m.step: m.value for m in client.get_metric_history(row.run.info.run_id, "epoch")}
        points = [(epochs[m.step], m.value) for m in history if epochs.get(m.step, 0) >= 1]  # epoch 0: untrained
        if not points:
            continue
        color = f"C{index % 10}"
        axis.plot(
            *zip(*[(e, min(v, CURVE_CEILING)) for e, v in points]), marker=".", color=color, label=row.spec["label"]
        )
        over = [(epoch, value) for epoch, value in points if value > CURVE_CEILING]
        if over:
            axis.plot([e for e, _ in over], [CURVE_CEILING] * len(over), marker="^", color=color, linestyle="")
            text = ", ".join(f"{value:,.0f}" for _, value in over)
            axis.annotate(text, (over[-1][0], CURVE_CEILING), xytext=(8, -4), textcoords="offset points", fontsize=7)
        planned = int(row.spec["epochs"])
        if row.spec.get("published_valid") is not None:
            axis.plot(planned, row.spec["published_valid"], marker="*", markersize=14, color=color, linestyle="")
        elif row.spec.get("published_test") is not None:
            axis.plot(planned, row.spec["published_test"], marker="x", markersize=10, color=color, linestyle="")
    axis.set_yscale("log")
    axis.set_ylim(top=CURVE_CEILING * 1.1)
    ticks = [t for t in (80, 100, 120, 150, 200, 300, 500, 1000) if t <= CURVE_CEILING]
    axis.set_yticks(ticks, [f"{t:g}" for t in ticks])
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation perplexity (stateful)")
    axis.set_title("PTB: validation curves; ★ published valid, × published test end point, ▲ off the scale")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def ngram_overlap(corpus: Corpus, orders: tuple[int, ...] = OVERLAP_ORDERS) -> dict[int, dict[str, float]]:
    """For each n, the share of the valid and test streams' n-grams that occur in the training stream.

    A split that repeats passages of the training text rewards a model that memorises n-grams
    (Kneser–Ney does, exactly) over one regularised not to (dropout).
    """
    train = corpus.splits["train"].stream().tolist()
    overlap: dict[int, dict[str, float]] = {}
    for n in orders:
        seen = set(ngrams(train, n))
        overlap[n] = {}
        for name in ("valid", "test"):
            grams = list(ngrams(corpus.splits[name].stream().tolist(), n))
            overlap[n][name] = sum(g in seen for g in grams) / max(1, len(grams))
    return overlap


def data_section(corpus: Corpus) -> list[str]:
    stats = corpus.stats
    files = [role for role in ("train", "valid", "test", "lines") if f"{role}.sha256" in stats]
    sources = ", ".join(relative(path) for path in (corpus.source or "").split(", "))
    return [
        "## Data",
        "",
        f"{stats.get('benchmark', '')} Source: {sources}. Vocabulary: {len(corpus.vocab):,} words "
        f"(the training split's types, `<eos>` and `<unk>` included).",
        "",
        markdown_table(
            ["split", "sha256", "tokens scored"],
            [
                [role, f"`{stats[f'{role}.sha256']}`", f"{stats[f'{role}.targets']:,}" if role != "lines" else ""]
                for role in files
            ]
            + [[split, "", f"{stats[f'{split}.targets']:,}"] for split in ("valid", "test") if split not in files],
        ),
    ]


def parity_section(parity: dict) -> list[str]:
    ours, theirs = parity["rnnexp_val_ppl"], parity["torch_val_ppl"]
    return [
        "## Parity with PyTorch",
        "",
        f"`python -m benchmarks.bench_ptb_parity`: the tanh RNN (H={parity['hidden_dim']}) from the same initial "
        f"weights, lr {parity['lr']:g} constant, {parity['epochs']} epochs, in {parity['dtype']}, trained by "
        "rnnexp's loop and by word_language_model's loop on a PyTorch twin, both scored by the stateful protocol.",
        "",
        markdown_table(
            ["epoch", "rnnexp valid ppl", "PyTorch valid ppl", "ratio"],
            [[str(e), f"{a:.2f}", f"{b:.2f}", f"{a / b:.4f}"] for e, (a, b) in enumerate(zip(ours, theirs))],
        ),
        f"Final ratio {parity['ratio']:.4f}: {'within' if parity['within_tolerance'] else 'outside'} ±3%.",
        "",
    ]


def results(rows: list[Row], kn: dict[str, Any], stamp: dict[str, Any]) -> dict[str, Any]:
    """The table as data: one entry per row, the KN5 row last."""
    entries = []
    for row in rows:
        corpus = row.corpus
        entries.append(
            {
                "row": row.key,
                "label": row.spec["label"],
                "config": " ".join(row.spec["overrides"]),
                "published_test_ppl": row.spec.get("published_test"),
                "published_valid_ppl": row.spec.get("published_valid"),
                "valid_ppl": row.metric("best_val_ppl"),
                "test_ppl": row.metric("test_ppl"),
                "ratio": row.ratio,
                "verdict": "not run"
                if row.run is None
                else verdict(row.ratio, row.standard)
                if row.run.info.status == "FINISHED"
                else "not finished",
                "interp_kn5_test_ppl": row.metric("interp_kn5_test_ppl"),
                "epochs": None if row.metric("epoch") is None else int(row.metric("epoch") or 0),
                "status": None if row.run is None else row.run.info.status,
                "wall_seconds": row.seconds,
                "tokens_per_sec": row.tokens_per_sec,
                "run_id": None if row.run is None else row.run.info.run_id,
                "git_commit": None if row.run is None else row.run.data.tags.get("git_commit"),
                "standard_benchmark": None if corpus is None else bool(corpus.stats.get("standard_benchmark")),
                "train_sha256": None if corpus is None else corpus.stats.get("train.sha256"),
                "train_tokens": None if corpus is None else corpus.stats.get("train.targets"),
            }
        )
    entries.append(
        {
            "row": "kn5",
            "label": "Kneser–Ney order 5, modified",
            "config": "python -m rnnexp.ngram experiment=ptb_kn5",
            "published_test_ppl": kn["published_test"],
            "published_valid_ppl": None,
            "valid_ppl": kn["valid_ppl"],
            "test_ppl": kn["test_ppl"],
            "ratio": kn["test_ppl"] / kn["published_test"],
            "verdict": verdict(kn["test_ppl"] / kn["published_test"], kn["standard"]),
            "interp_kn5_test_ppl": None,
            "epochs": None,
            "status": "FINISHED",
            "wall_seconds": kn["seconds"],
            "tokens_per_sec": None,
            "run_id": None,
            "git_commit": None,
            "standard_benchmark": kn["standard"],
            "train_sha256": kn["train_sha256"],
            "train_tokens": kn["train_tokens"],
        }
    )
    return {"provenance": stamp, "tolerance": TOLERANCE, "rows": entries}


def kn5_row(corpus: Corpus, published: float) -> dict[str, Any]:
    """KN5 on the neural rows' own tokens (their training stream, scored by the stateful protocol)."""
    scores = timed_table(corpus, "stateful", [5], modified=True)[0]
    return {
        "published_test": published,
        "valid_ppl": scores["valid_ppl"],
        "test_ppl": scores["test_ppl"],
        "seconds": scores["build_s"] + scores["score_s"],
        "data": data_label(corpus),
        "standard": bool(corpus.stats.get("standard_benchmark")),
        "train_sha256": corpus.stats.get("train.sha256"),
        "train_tokens": corpus.stats.get("train.targets"),
    }


def render(rows: list[Row], medium: Row, kn: dict, corpus: Corpus, parity: dict | None, stamp: str) -> str:
    standard = all(row.corpus is None or row.corpus.stats.get("standard_benchmark") for row in rows)
    warning = (
        []
        if standard and corpus.stats.get("standard_benchmark")
        else [
            "**These rows are NOT on the standard Penn Treebank benchmark** (see Data below): their perplexities "
            "cannot be compared with the published figures, and the verdicts say nothing about reproduction.",
            "",
        ]
    )
    overlap = ngram_overlap(corpus)
    return "\n".join(
        [
            "# The Penn Treebank benchmark: the literature's recipes in rnnexp",
            "",
            f"Made by `make ptb` (`python -m experiments.ptb.report`) at {stamp}.",
            "",
            *warning,
            "Every row is one MLflow run of `python -m rnnexp.run` with the configs shown, read back from the store. "
            "Perplexities are the stateful protocol (each split one stream, the state carried throughout, every token "
            "predicted once, as word_language_model and Mikolov's rnnlm score); valid is the best epoch's, test that "
            "checkpoint's. The ratio is rnnexp's test perplexity over the published one; a row is reproduced when it "
            "lies within ±3%. KN5 is scored on the very tokens of the neural rows; each neural row is also mixed "
            "with it token by token (λ tuned on validation). Wall time and tokens/s are this machine's.",
            "",
            table(rows, kn),
            *notes(rows),
            *total_time(rows, kn),
            "Published figures: word_language_model's README (`python main.py --epochs 6`: 117.61; `--tied`: 110.44); "
            "Zaremba, Sutskever & Vinyals (2014), table 1 (small, non-regularised: valid 120.7, test 114.5; medium: "
            "valid 86.2, test 82.7; KN5 from Mikolov & Zweig 2012: 141.2).",
            "",
            "![validation curves](curves.png)",
            "",
            *class_cost(rows),
            *medium_section(medium),
            *data_section(corpus),
            "## n-grams of valid and test seen in training",
            "",
            markdown_table(
                ["n", "valid", "test"],
                [[str(n), f"{100 * s['valid']:.1f}%", f"{100 * s['test']:.1f}%"] for n, s in overlap.items()],
            ),
            "The share of each split's n-grams that occur verbatim in the training stream: what Kneser–Ney, which "
            "memorises every n-gram it saw, gets nearly for free.",
            "",
            *(parity_section(parity) if parity is not None and "skipped" not in parity else []),
        ]
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
@cli.reports_user_errors
def main(cfg: DictConfig) -> None:
    uri = tracking.resolve_tracking_uri(cfg.tracking_uri)
    specs: dict[str, dict] = OmegaConf.to_container(cfg.rows)  # type: ignore[assignment]
    medium_spec: dict = OmegaConf.to_container(cfg.medium)  # type: ignore[assignment]
    unknown = set(cfg.only) - set(specs)
    if unknown:
        raise UserError(f"only= names no row: {', '.join(sorted(unknown))}; the rows are {', '.join(specs)}.")
    if cfg.train_rows:
        for key, spec in specs.items():
            if not cfg.only or key in cfg.only:
                train_row(key, spec, cfg, uri)
    if cfg.train_medium:
        train_row(MEDIUM, medium_spec, cfg, uri)
    client = tracking.connect(uri)
    corpora: dict[str, Corpus] = {}
    rows = [read_row(client, cfg.experiment_name, key, spec, corpora) for key, spec in specs.items()]
    medium = read_row(client, cfg.experiment_name, MEDIUM, medium_spec, corpora)
    reference = resolve(
        row_config(list(next(iter(specs.values()))["overrides"]), list(cfg.extra), uri, cfg.experiment_name)
    )
    corpus = load_corpus(reference.dataset, seed=reference.seed)
    kn = kn5_row(corpus, float(cfg.kn5_published_test))
    shown = [*rows, medium] if medium.run is not None else rows
    parity = bench_ptb_parity.run() if cfg.parity else None
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    stamp = provenance(CODE)
    curves(client, shown, report_dir / "curves.png")
    text = render(shown, medium, kn, corpus, parity, stamp.markdown())
    adaptive = report_dir / CACHE_DYNAMIC  # written by experiments.ptb.cache_dynamic on the best LSTM
    if adaptive.is_file():
        text += "\n" + adaptive.read_text()
    (report_dir / "REPORT.md").write_text(text)
    record = results(shown, kn, {"commit": stamp.commit, "dirty": stamp.dirty, "code_hash": stamp.code_hash})
    (report_dir / "results.json").write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    log.info("wrote %s, results.json and curves.png", report_dir / "REPORT.md")


if __name__ == "__main__":
    cli.guard(main)
