"""The real Penn Treebank as the benchmark: where it is read from, its sha256 check, its vocabulary, the
literature's recipes as configs, and `make ptb`'s report run end to end on a small cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from runner_setup import command

from rnnexp.config import compose_run, resolve
from rnnexp.data import DatasetConfig, load_corpus
from rnnexp.data import ptb as ptb_module

ROOT = Path(__file__).resolve().parents[1]
SHARED = ptb_module.SHARED_DATA_DIR
FILES = {split: SHARED / f"ptb.{split}.txt" for split in ("train", "valid", "test")}
needs_ptb = pytest.mark.skipif(
    not all(path.is_file() for path in FILES.values()), reason=f"the full PTB is not in {SHARED}"
)


@needs_ptb
def test_by_default_the_three_shared_files_are_read_and_are_the_standard_benchmark(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("RNNEXP_DATA_DIR", raising=False)
    if (ROOT / "data" / "ptb.train.txt").is_file():
        pytest.skip(f"{ROOT / 'data'} holds its own PTB, which takes precedence")
    assert ptb_module.find_sources(DatasetConfig(name="ptb")) == FILES
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the standard files: no warning at all
        corpus = load_corpus(DatasetConfig(name="ptb", vocab_size=10000, mode="stream"), cache_dir=tmp_path)
    assert corpus.stats["standard_benchmark"] is True
    assert corpus.params["dataset.standard_benchmark"] == "true"
    assert {role: corpus.stats[f"{role}.sha256"] for role in FILES} == ptb_module.STANDARD_SHA256
    assert [corpus.stats[f"{split}.targets"] for split in FILES] == [929_589, 73_760, 82_430]
    # the vocabulary is the 10,000 types of train, <eos> (one per line) among them; train has no OOV
    train_words = set(FILES["train"].read_text().split())
    assert len(corpus.vocab) == 10_000 == len(train_words) + 1
    assert set(corpus.vocab.words) == train_words | {"<eos>"}
    assert "<unk>" in train_words and corpus.stats["train.unknown_fraction"] == pytest.approx(45_020 / 929_590)


@needs_ptb
@pytest.mark.filterwarnings("ignore:dataset.vocab_size=10000:UserWarning", "ignore:the vocabulary has:UserWarning")
def test_a_different_file_is_read_with_a_warning_naming_the_expected_digest(tmp_path) -> None:
    directory = tmp_path / "ptb"
    directory.mkdir()
    lines = FILES["train"].read_text().splitlines(keepends=True)
    (directory / "ptb.train.txt").write_text("".join(lines[:3000]))
    for split in ("valid", "test"):
        (directory / f"ptb.{split}.txt").write_bytes(FILES[split].read_bytes())
    expected = ptb_module.STANDARD_SHA256["train"]
    with pytest.warns(UserWarning, match=rf"ptb.train.txt has sha256 [0-9a-f]{{64}}, not the standard .*{expected}"):
        corpus = load_corpus(DatasetConfig(name="ptb", path=str(directory), vocab_size=10000), cache_dir=tmp_path / "c")
    assert corpus.stats["standard_benchmark"] is False
    assert corpus.params["dataset.standard_benchmark"] == "false"
    assert corpus.stats["benchmark"].startswith("NOT the standard Penn Treebank benchmark")
    assert corpus.stats["valid.sha256"] == ptb_module.STANDARD_SHA256["valid"]  # the two intact files still match
    with pytest.warns(UserWarning, match=expected):  # said again on every cached load
        load_corpus(DatasetConfig(name="ptb", path=str(directory), vocab_size=10000), cache_dir=tmp_path / "c")


@pytest.mark.parametrize("how", ["data_dir", "path"])
def test_a_missing_file_is_one_line_naming_it_and_exit_status_2(tmp_path, how: str) -> None:
    directory = tmp_path / "ptb"
    directory.mkdir()
    for split in ("train", "valid"):  # two of the three: an error, never the fallback split
        (directory / f"ptb.{split}.txt").write_text(" a b c\n d e\n")
    location = [f"dataset.path={directory}"] if how == "path" else []
    env = {**os.environ, "RNNEXP_DATA_DIR": str(directory), "RNNEXP_CACHE_DIR": str(tmp_path / "cache")}
    args = command(tmp_path, "experiment=ptb_lstm_wlm", f"tracking_uri=sqlite:///{tmp_path}/mlflow.db", *location)
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    problem = "does not exist" if how == "path" else "is not at"
    assert done.stderr.startswith(f"error: {directory / 'ptb.test.txt'} {problem}") or done.stderr.startswith(
        f"error: ptb.test.txt {problem} {directory / 'ptb.test.txt'}"
    ), done.stderr


def test_the_recipes_compose_to_the_literature_s_settings() -> None:
    small = resolve(compose_run(["experiment=ptb_lstm_small"]))
    assert (small.model.cell, small.model.layers, small.model.hidden_dim, small.model.dropout) == ("lstm", 2, 200, 0.0)
    assert (small.model.init_range, small.model.bptt_truncate, small.train.batch_size) == (0.1, 20, 20)
    assert (small.optim.lr, small.optim.clip_norm, small.train.epochs) == (20, 0.25, 13)
    assert (small.schedule.name, small.schedule.hold_epochs, small.schedule.gamma) == ("hold_then_decay", 4, 0.5)
    medium = resolve(compose_run(["experiment=ptb_lstm_medium"]))
    assert (medium.model.hidden_dim, medium.model.dropout, medium.model.init_range) == (650, 0.5, 0.05)
    assert medium.optim.clip_norm is not None and medium.optim.lr * medium.optim.clip_norm == pytest.approx(
        5.0
    )  # clip 5 on the loss summed over 35 steps
    assert (medium.schedule.hold_epochs, medium.schedule.gamma * 1.2, medium.train.epochs) == (6, pytest.approx(1), 39)
    wlm = resolve(compose_run(["experiment=ptb_lstm_wlm", "model.tie_weights=true"]))
    assert (wlm.model.layers, wlm.model.hidden_dim, wlm.model.dropout, wlm.model.tie_weights) == (2, 200, 0.2, True)
    assert (wlm.optim.lr, wlm.optim.clip_norm, wlm.schedule.name, wlm.schedule.gamma) == (20, 0.25, "plateau", 0.25)
    assert (wlm.train.epochs, wlm.model.bptt_truncate, wlm.eval.protocol, wlm.model.init_range) == (
        6,
        35,
        "stateful",
        None,
    )
    for recipe in (small, medium, wlm):
        assert (recipe.dataset.name, recipe.dataset.vocab_size, recipe.dataset.mode) == ("ptb", 10000, "stream")
        assert recipe.experiment_name == "ptb" and recipe.baseline.orders == [5]


@needs_ptb
def test_kn5_alone_scores_the_benchmark_near_its_published_figure(tmp_path) -> None:
    env = {**os.environ, "RNNEXP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RNNEXP_DATA_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "rnnexp.ngram", "experiment=ptb_kn5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| KN5"))
    valid, test = (float(cell) for cell in row.split("|")[2:4])
    assert test == pytest.approx(141.2, rel=0.03)  # Mikolov & Zweig (2012), as Zaremba et al. tabulate it
    assert valid == pytest.approx(147.7, abs=0.1) and "73,760 / 82,430" in row  # every token once


SMALL_CUT = [
    "dataset.max_sentences=200",
    "model.hidden_dim=8",
    "train.epochs=1",
    "train.samples=0",
    "blas_threads=1",
    "diagnostics.enabled=false",
]


def report(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    extra = [*SMALL_CUT, f"train.checkpoint_dir={tmp_path}/checkpoints"]
    env = {**os.environ, "RNNEXP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RNNEXP_DATA_DIR", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.ptb.report",
            f"tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"report_dir={tmp_path}/report",
            "extra=[" + ",".join(f'"{override}"' for override in extra) + "]",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@needs_ptb
def test_the_report_on_a_small_cut_trains_every_row_and_writes_its_table_and_results(tmp_path) -> None:
    done = report(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "report/results.json").read_text())
    rows = {entry["row"]: entry for entry in results["rows"]}
    assert list(rows) == ["rnn", "lstm_wlm", "lstm_wlm_tied", "lstm_small", "gru_wlm", "lstm_wlm_class", "kn5"]
    assert set(results["provenance"]) == {"commit", "dirty", "code_hash"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    published = {"lstm_wlm": 117.61, "lstm_wlm_tied": 110.44, "lstm_small": 114.5, "kn5": 141.2}
    for key, entry in rows.items():
        assert entry["published_test_ppl"] == published.get(key)
        assert entry["train_sha256"] == ptb_module.STANDARD_SHA256["train"]  # the right file, cut to 200 lines
        assert 4000 < entry["train_tokens"] < 5000 and entry["standard_benchmark"] is False
        assert 1 < entry["test_ppl"] < 2000 and 1 < entry["valid_ppl"] < 2000
        if entry["published_test_ppl"] is not None:
            assert entry["ratio"] == pytest.approx(entry["test_ppl"] / entry["published_test_ppl"])
            assert entry["verdict"] == "not comparable: not the standard benchmark"
        if key == "kn5":
            continue
        assert entry["epochs"] == 1 and entry["status"] == "FINISHED" and entry["wall_seconds"] > 0
        assert entry["tokens_per_sec"] > 0
        run = client.get_run(entry["run_id"])
        assert run.data.tags["ptb_row"] == key and run.data.metrics["test_ppl"] == entry["test_ppl"]
        assert run.data.tags["dataset.standard_benchmark"] == "false"  # the run says which data it used
        assert "NOT the standard Penn Treebank benchmark" in run.data.tags[MLFLOW_RUN_NOTE]
        # KN5 was scored on exactly the tokens each neural row was scored on
        assert run.data.metrics["kn5_test_ppl"] == pytest.approx(rows["kn5"]["test_ppl"], rel=1e-9)
        assert entry["interp_kn5_test_ppl"] == run.data.metrics["interp_kn5_test_ppl"]
    assert client.get_run(rows["lstm_wlm_tied"]["run_id"]).data.params["model.tie_weights"] == "True"
    assert client.get_run(rows["lstm_small"]["run_id"]).data.params["schedule.name"] == "hold_then_decay"
    text = (tmp_path / "report/REPORT.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "MLflow run" not in line]
    assert len([line for line in table if "`experiment=" in line or "ptb_kn5" in line]) == 7
    for entry in results["rows"][:-1]:
        assert f"`{entry['run_id']}`" in text
    assert "**These rows are NOT on the standard Penn Treebank benchmark**" in text
    assert "## The class-based output" in text and (tmp_path / "report/curves.png").stat().st_size > 10_000
    assert "Not run yet: `make ptb-medium`" in text
    assert all(
        entry["git_commit"] == client.get_run(entry["run_id"]).data.tags["git_commit"] for entry in rows_run(rows)
    )
    assert "The rows trained at commit" in text
    together = sum(entry["wall_seconds"] for entry in results["rows"]) / 60  # the neural rows and KN5
    assert f"took {together:.1f} min together (KN5 included)" in text

    again = report(tmp_path, "only=[rnn]")  # one row retrained, the others read back as they were
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = {entry["row"]: entry for entry in json.loads((tmp_path / "report/results.json").read_text())["rows"]}
    assert rerun["rnn"]["run_id"] != rows["rnn"]["run_id"]
    assert all(rerun[key]["run_id"] == rows[key]["run_id"] for key in rows if key not in ("rnn", "kn5"))
    wrong = report(tmp_path, "only=[nope]")
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        "error: only= names no row: nope; the rows are rnn, lstm_wlm, lstm_wlm_tied, lstm_small, gru_wlm, "
        "lstm_wlm_class."
    ]


def rows_run(rows: dict[str, dict]) -> list[dict]:
    return [entry for key, entry in rows.items() if key != "kn5"]


@needs_ptb
@pytest.mark.slow
def test_make_ptb_medium_trains_its_run_once_and_reports_it_beside_rows_not_run(tmp_path) -> None:
    for _ in range(2):  # the second call finds the finished run and leaves it as it is
        done = report(tmp_path, "train_rows=false", "train_medium=true")
        assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("ptb")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.data.tags["ptb_row"] for run in runs] == ["lstm_medium"] and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model.init_range"] == "0.05"
    rows = json.loads((tmp_path / "report/results.json").read_text())["rows"]
    assert [entry["row"] for entry in rows] == [
        "rnn", "lstm_wlm", "lstm_wlm_tied", "lstm_small", "gru_wlm", "lstm_wlm_class", "lstm_medium", "kn5"
    ]  # fmt: skip
    assert [entry["verdict"] for entry in rows[:6]] == ["not run"] * 6
    assert rows[6]["run_id"] == runs[0].info.run_id and rows[6]["epochs"] == 1
    assert "1 of 1 epochs" in (tmp_path / "report/REPORT.md").read_text()
