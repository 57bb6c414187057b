"""The truncation study: intervals and verdicts over seeds, the stateful scoring, and a tiny sweep end to end."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from experiments.truncation import fair, figures, grid, report, study
from experiments.truncation.measure import (
    LEARNT_EXCESS,
    Job,
    cells_of,
    describe_setting,
    reach_possible,
    score,
    t_interval,
    unique_jobs,
)
from rnnexp.config import ModelConfig, resolve
from rnnexp.config.dataset import DatasetConfig, SyntheticConfig
from rnnexp.data import load_corpus
from rnnexp.engine import build_model
from rnnexp.errors import UserError
from rnnexp.tracking import trained

ROOT = Path(__file__).resolve().parents[1]
PLACED = SyntheticConfig(n_sentences=60, distance=3, key_positions=2, min_words=6, mean_words=7.0, max_words=10)


def job(distance: int, setting: str, seed: int, excess: float, order=(0, 0, 0, 0), reach: bool = True) -> Job:
    return Job(
        distance,
        setting,
        order,
        seed,
        f"run-{distance}-{setting}-{seed}",
        "FINISHED",
        "sentence",
        reach,
        dependent_excess=excess,
        echo_accuracy=1.0 - excess,
        other_excess=0.1,
        decay=(1.0, 0.5, 0.25),
        minutes=1.0,
        updates=100,
        tokens_per_update=400.0,
    )


def config(**overrides: object):
    base = {
        "seed": 1,
        "model": {"hidden_dim": 8, "bptt_truncate": 4, "truncation": "window"},
        "optim": {"lr": 0.5},
        "train": {"epochs": 1, "batch_size": 4},
        "dataset": {"vocab_size": 30, "synthetic": {"distance": 5, "max_words": 24}},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        base[section][name] = value  # type: ignore[index]
    return resolve(base)


def test_the_interval_is_students_t_and_decides_the_verdict() -> None:
    values = [0.02, 0.04, 0.03, 0.05, 0.01]
    interval = t_interval(values)
    half = 2.7764451051977987 * np.std(values, ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert interval.mean == pytest.approx(0.03) and interval.high == pytest.approx(0.03 + half)
    assert interval.low == pytest.approx(0.03 - half) and interval.verdict == "learnt"
    assert t_interval([1.3, 1.4, 1.5, 1.35, 1.45]).verdict == "not learnt"
    assert t_interval([0.01, 0.02, 1.4, 0.03, 0.02]).verdict == "undecided"  # one seed failing leaves it open
    assert t_interval([0.01]).verdict == "too few seeds" and math.isnan(t_interval([0.01]).high)


def test_cells_group_the_seeds_and_count_the_seeds_learnt() -> None:
    jobs = [job(5, "full", seed, excess, (0, 1, 1, 0)) for seed, excess in enumerate([0.01, 0.02, 1.4, 0.03, 0.02])]
    jobs += [job(5, "window 2", seed, 1.4, (0, 0, 2, 0), reach=False) for seed in range(5)]
    jobs += [job(10, "full", seed, 0.01 * seed, (0, 1, 1, 0)) for seed in range(5)]
    cells = cells_of(jobs)
    assert [(c.distance, c.setting) for c in cells] == [(5, "window 2"), (5, "full"), (10, "full")]
    assert [c.verdict for c in cells] == ["not learnt", "undecided", "learnt"]
    assert cells[1].seeds_learnt == 4 and len(cells[1].finished) == 5
    assert cells[0].mean("echo_accuracy") == pytest.approx(-0.4)
    distances, settings, at = figures.grid(cells)
    assert distances == [5, 10] and settings == ["window 2", "full"] and at[(10, "full")] is cells[2]


def test_a_cell_and_seed_run_in_two_sweeps_counts_once() -> None:
    first, again = job(10, "LSTM full", 1, 1.15), job(10, "LSTM full", 1, 1.15 + 1e-7)
    other = job(10, "LSTM full", 2, 1.2)
    kept, gaps = unique_jobs([first, again, other])
    assert kept == [first, other] and gaps == [pytest.approx(1e-7)]
    assert len(cells_of([first, again, other])[0].finished) == 2


def test_settings_are_named_and_ordered_from_the_saved_config() -> None:
    assert describe_setting(config()) == ("window 4", (0, 0, 4, 0))
    assert describe_setting(config(model__truncation="full")) == ("full", (0, 1, 4, 0))
    assert describe_setting(config(model__truncation="window", model__bptt_truncate=30))[0] == "full"  # > max_words
    assert describe_setting(config(model__truncation="chunk", model__bptt_truncate=8)) == ("chunk 8", (0, 2, 8, 0))
    assert describe_setting(config(model__cell="lstm", model__truncation="full"))[0] == "LSTM full"
    fair = describe_setting(config(model__cell="lstm", model__truncation="full", train__patience=5))
    assert fair == ("LSTM full (fair)", (1, 1, 4, 1))  # early stopping marks the fair protocol
    assert config(model__truncation="chunk").eval.protocol == "stateful"  # what the report scores chunk jobs with


def test_the_gradient_reaches_the_key_when_the_truncation_spans_the_distance() -> None:
    assert reach_possible(config(model__bptt_truncate=4))  # d = 5: echo output back to the key is 4 steps
    assert not reach_possible(config(model__bptt_truncate=3))
    assert reach_possible(config(model__truncation="full", model__bptt_truncate=1))
    assert reach_possible(config(model__truncation="chunk", model__bptt_truncate=5))  # key and echo in one chunk
    assert not reach_possible(config(model__truncation="chunk", model__bptt_truncate=4))


def test_stateful_scores_match_a_literal_loop_over_the_stream() -> None:
    corpus = load_corpus(DatasetConfig(vocab_size=30, synthetic=PLACED))
    test = corpus.splits["test"]
    model = build_model(ModelConfig(hidden_dim=8, bptt_truncate=3, truncation="chunk"), 30, seed=2)
    dependent, accuracy, other = score(model, test, "stateful")
    stream = test.stream()
    nll, guesses, h = [], [], None
    for t in range(len(stream) - 1):  # one token at a time, the state carried across sentences
        step, h = model.token_nll(stream[None, t : t + 1], stream[None, t + 1 : t + 2], h0=h)
        nll.append(float(step[0, 0]))
    guesses = model.predict(stream[:-1])
    at, targets, offset = [], [], 0
    for sentence, marks in zip(test.sentences, test.dependent):
        at += [offset + j for j in np.flatnonzero(marks)]
        targets += [offset + j for j in range(len(sentence) - 1)]
        offset += len(sentence)
    oracle = np.concatenate(test.oracle_token_nll)
    assert dependent == pytest.approx(np.mean([nll[j] for j in at]), rel=1e-5)  # the echo's oracle NLL is 0
    assert accuracy == pytest.approx(np.mean([guesses[j] == stream[j + 1] for j in at]))
    others = [j for j in targets if j not in set(at)]
    assert other == pytest.approx(np.mean([nll[j] for j in others]) - oracle.sum() / len(others), rel=1e-5)
    sentence_dependent = score(model, test, "sentence")[0]
    assert sentence_dependent != pytest.approx(dependent)  # the carried state changes the scores


def test_changed_verdicts_compare_with_the_single_seed_study() -> None:
    old = report.single_seed_verdicts()
    assert old[(10, "full")] == 0.08 and old[(5, "chunk 8")] == 0.23  # its window 64 was full BPTT
    cells = cells_of(
        [job(10, "full", s, 1.4 + 0.01 * s) for s in range(5)] + [job(2, "full", s, 0.0) for s in range(5)]
    )
    rows, compared = report.changed_verdicts(cells)
    assert compared == 2 and [row[:3] for row in rows] == [["d = 10", "full", "0.08 (learnt)"]]
    assert "(not learnt, 0/5 seeds)" in rows[0][3]
    assert LEARNT_EXCESS == 0.1


@pytest.mark.slow
def test_a_tiny_study_runs_as_one_sweep_and_reports_its_intervals(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tiny = [
        "dataset.vocab_size=30",
        "model.hidden_dim=8",
        "train.epochs=1",
        "dataset.synthetic.n_sentences=200",
        "dataset.synthetic.key_positions=2",
        "dataset.synthetic.min_words=6",
        "dataset.synthetic.mean_words=7",
        "dataset.synthetic.max_words=10",
        "dataset.synthetic.distance=2,3",
        "experiment/truncation_cell=window2,full,chunk4",
        "seed=1,2",
        f"tracking_uri={uri}",
        f"train.checkpoint_dir={tmp_path}/checkpoints",
    ]
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnexp.run",
            "experiment=truncation_study",
            *tiny,
            f"hydra.sweep.dir={tmp_path}/sweep",
            "-m",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    written = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.truncation.report",
            f"tracking_uri={uri}",
            f"checkpoint_dir={tmp_path}/checkpoints",
            f"report_dir={tmp_path}/report",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert written.returncode == 0, written.stderr[-2000:]

    client = MlflowClient(uri)
    parent = report.find_sweep(client, "truncation_study", None)
    assert parent.info.status == "FINISHED"
    jobs = report.children(client, parent)
    assert len(jobs) == 12 and {job.info.status for job in jobs} == {"FINISHED"}
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| distance | window 2 | full | chunk 4 |" in text
    assert "2 seeds per cell (1, 2)" in text and "code hash `" in text
    assert (tmp_path / "report" / report.HEATMAP).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {artifact.path for artifact in client.list_artifacts(parent.info.run_id, "truncation_study")}
    assert logged == {f"truncation_study/{name}" for name in ("REPORT.md", report.HEATMAP, report.DECAY)}

    chunk = [
        j
        for j in jobs
        if j.data.params["model.truncation"] == "chunk" and j.data.params["dataset.synthetic.distance"] == "3"
    ]
    loaded = trained.load(client, chunk[0].info.run_id, "best", tmp_path / "checkpoints")
    test = load_corpus(loaded.config.dataset, seed=loaded.config.seed).splits["test"]
    scored = client.get_run(chunk[0].info.run_id).data.metrics
    assert scored["test_dependent_excess_loss"] == pytest.approx(score(loaded.model, test, "stateful")[0], rel=1e-6)
    excesses = [client.get_run(j.info.run_id).data.metrics["test_dependent_excess_loss"] for j in chunk]
    interval = t_interval(excesses)
    assert f"{interval.mean:.2f} [{interval.low:.2f}, {interval.high:.2f}]" in text


CELLS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf/experiment/truncation_cell").glob("*.yaml"))


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_of_the_study_trains_on_the_same_tokens_per_update(cell: str) -> None:
    """The study's claim: equal tokens per update, so a chunk cell's streams make up for its short chunks."""
    from rnnexp.config import compose_run

    run = resolve(compose_run(["experiment=truncation_study", f"experiment/truncation_cell={cell}"]))
    mean_targets = run.dataset.synthetic.mean_words + 1  # a sentence's words and its end token
    per_update = run.train.batch_size * (run.model.bptt_truncate if run.model.truncation == "chunk" else mean_targets)
    assert per_update == pytest.approx(16 * mean_targets, rel=0.04)  # to the nearest whole number of streams


def test_the_fair_protocol_and_its_grid_compose_from_the_configs() -> None:
    from rnnexp.config import compose_run

    grid_axes = study.sweep_params("truncation_lr_grid")
    assert grid_axes["optim.lr"] == "0.5,1,2,4" and grid_axes["dataset.synthetic.distance"] == "10"
    assert grid_axes["experiment/truncation_cell"] == "full,lstm_full,gru_full" and grid_axes["seed"] == "1,2,3"
    fair_axes = study.sweep_params("truncation_fair")
    assert fair_axes["experiment/truncation_cell"] == "full,lstm_full,gru_full"
    assert fair_axes["dataset.synthetic.distance"] == "5,10,20" and fair_axes["seed"] == "1,2,3,4,5"
    for experiment in ("truncation_fair", "truncation_lr_grid", "truncation_fair_quick", "truncation_lr_grid_quick"):
        run = resolve(compose_run([f"experiment={experiment}", "experiment/truncation_cell=lstm_full"]))
        assert (run.train.epochs, run.train.patience, run.experiment_name) == (80, 8, experiment)
        assert run.model.hidden_dim == 64 and run.dataset.vocab_size == 64 and run.optim.clip_norm == 1.0
    fixed = resolve(compose_run(["experiment=truncation_study"]))  # the fixed-rate study stays as it was
    assert (fixed.train.epochs, fixed.train.patience, fixed.optim.lr) == (20, None, 1.0)
    quick = study.sweep_params("truncation_lr_grid_quick")
    assert (
        study.swept_cells("truncation_fair_quick")
        == ["full", "lstm_full"]
        == quick["experiment/truncation_cell"].split(",")
    )


def test_each_family_sweeps_its_cells_at_its_chosen_rate() -> None:
    sweeps = study.fair_sweeps("truncation_fair", {"rnn": 1.0, "lstm": 2.0, "gru": 0.5})
    assert sweeps["lstm"] == [
        "experiment=truncation_fair",
        "experiment_name=truncation_fair_lstm",
        "experiment/truncation_cell=lstm_full",
        "optim.lr=2",
    ]
    assert sweeps["rnn"][2:] == ["experiment/truncation_cell=full", "optim.lr=1"]
    assert list(sweeps) == ["rnn", "lstm", "gru"]
    families = [study.family_of(cell) for cell in ("window4", "chunk8", "full", "lstm_window4", "gru_full")]
    assert families == ["rnn", "rnn", "rnn", "lstm", "gru"]  # a family's cells share its chosen rate
    with pytest.raises(UserError, match="chose no rate for gru"):
        study.fair_sweeps("truncation_fair", {"rnn": 1.0, "lstm": 2.0})


def log_grid_job(client: MlflowClient, experiment_id: str, cell: str, lr: float, seed: int, val_losses) -> None:
    """A grid job as rnnexp.run leaves it: its resolved config as the artifact, its validation curve."""
    from rnnexp.config import as_tree, compose_run

    cfg = resolve(
        compose_run(["experiment=truncation_lr_grid", f"experiment/truncation_cell={cell}", f"optim.lr={lr}"])
    )
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, OmegaConf.to_yaml(as_tree(cfg)), trained.CONFIG_ARTIFACT)
    for step, loss in enumerate(val_losses or []):
        client.log_metric(run.info.run_id, "val_loss", loss, step=200 * step)
    client.set_terminated(run.info.run_id, "FINISHED" if val_losses else "FAILED")


def test_the_grid_chooses_the_rate_of_lowest_mean_validation_loss(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("grid", artifact_location=str(tmp_path / "artifacts"))
    best = {  # per (cell, lr): each seed's best validation loss; lstm's lowest mean is at 2 (seed 1 alone prefers 1)
        ("lstm_full", 0.5): (2.30, 2.31),
        ("lstm_full", 1.0): (2.18, 2.29),
        ("lstm_full", 2.0): (2.20, 2.21),
        ("full", 0.5): (2.21, 2.22),
        ("full", 1.0): (2.25, 2.24),
        ("full", 2.0): (2.19, None),  # seed 2 diverged: a rate that fails a seed is not a candidate
    }
    for (cell, lr), losses in best.items():
        for seed, loss in enumerate(losses, 1):
            log_grid_job(client, experiment_id, cell, lr, seed, None if loss is None else [4.1, loss + 0.05, loss])
    runs = client.search_runs([experiment_id])
    points = grid.read_grid(client, runs)
    assert [(p.family, p.lr) for p in points] == [(f, lr) for f in ("rnn", "lstm") for lr in (0.5, 1.0, 2.0)]
    lstm_2 = next(p for p in points if p.family == "lstm" and p.lr == 2.0)
    assert sorted(lstm_2.best_val_losses) == pytest.approx([2.20, 2.21]) and lstm_2.updates == (400, 400)
    choices = grid.choose(points)
    assert (choices["lstm"].lr, choices["lstm"].on_edge) == (2.0, True)  # the highest rate tried: flagged
    assert (choices["rnn"].lr, choices["rnn"].on_edge) == (0.5, True)
    assert math.isinf(next(p for p in points if p.family == "rnn" and p.lr == 2.0).mean_loss)
    inner = grid.choose([p for p in points if p.family == "lstm"] + [grid.GridPoint("lstm", 4.0, (2.5, 2.6), ())])
    assert (inner["lstm"].lr, inner["lstm"].on_edge) == (2.0, False)
    table = fair.grid_table(choices)
    assert "**2.2050 [" in table and "1/2 failed" in table and "| 2 (on the grid's edge) |" in table


def test_the_fair_cells_sit_beside_their_fixed_twins_and_the_text_follows_the_numbers() -> None:
    def cell_jobs(distance: int, setting: str, order, excesses, reach=1e-3, early=True):
        return [
            replace(job(distance, setting, seed, e, order), stopped_early=early, decay=(1.0,) * 9 + (reach,))
            for seed, e in enumerate(excesses, 1)
        ]

    jobs = cell_jobs(10, "full", (0, 1, 1, 0), [0.05, 0.06, 0.04])
    jobs += cell_jobs(10, "full (fair)", (0, 1, 1, 1), [0.03, 0.04, 0.05])
    jobs += cell_jobs(10, "LSTM full", (1, 1, 1, 0), [1.2, 1.1, 1.3])
    jobs += cell_jobs(10, "LSTM full (fair)", (1, 1, 1, 1), [0.6, 0.7, 0.65], reach=1e-5, early=False)
    cells = cells_of(jobs)
    assert [c.setting for c in cells] == ["full", "full (fair)", "LSTM full", "LSTM full (fair)"]
    assert [(fair_cell.setting, fixed.setting) for fair_cell, fixed in fair.twins(cells)] == [
        ("full (fair)", "full"),
        ("LSTM full (fair)", "LSTM full"),
    ]
    assert fair.changed_by_protocol(cells) == "The fair protocol changes none of the 2 verdicts it can be compared on."
    section = fair.lstm_section(cells)
    assert "| d = 10 |" in section and "| yes |" in section
    assert "carries less gradient back to the key (1.0e-05 against 1.0e-03)" in section
    assert "3 of its 3 seeds ran to the epoch ceiling" in section
    assert "not shown to be a property of the task" in fair.task_property(cells)
    learnt = cells_of(
        [j for j in jobs if j.setting != "LSTM full (fair)"]
        + cell_jobs(10, "LSTM full (fair)", (1, 1, 1, 1), [0.02, 0.03, 0.04])
    )
    assert "changes 1 of the 2 verdicts: LSTM full at d = 10 (not learnt → learnt)" in fair.changed_by_protocol(learnt)
    assert "does not lose to the tanh RNN at any distance" in fair.lstm_section(learnt)
    assert "at d = 10, and under the fair protocol at no distance: that gap was the training protocol's" in (
        fair.task_property(learnt)
    )
