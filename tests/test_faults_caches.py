"""Caches heal: an unreadable entry is a miss, said in one warning naming the file, then built again."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runner_setup import client, compose_run

from rnnexp.config.schema import KneserNeyConfig
from rnnexp.data import DatasetConfig, load_corpus
from rnnexp.data.cache import entry_paths
from rnnexp.errors import UserError
from rnnexp.tracking import train, trained
from rnnexp.training import baseline

pytestmark = pytest.mark.filterwarnings("ignore:dataset.vocab_size=:UserWarning")


def truncate(path: Path) -> None:
    """What a full disk or a killed copy leaves: the first half of the file."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def unreadable_warnings(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


@pytest.fixture
def text_corpus(tmp_path: Path) -> DatasetConfig:
    source = tmp_path / "source.txt"
    source.write_text("".join(f"the quick fox {i % 5} jumps over the dog {i % 3}\n" for i in range(40)))
    return DatasetConfig(name="text", path=str(source), vocab_size=50, valid_fraction=0.25, test_fraction=0.25)


def test_a_truncated_data_cache_entry_is_rebuilt_with_one_warning(
    tmp_path: Path, text_corpus: DatasetConfig, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_corpus(text_corpus, cache_dir=tmp_path / "cache")
    npz, _ = entry_paths(tmp_path / "cache", "text", first.digest)
    truncate(npz)
    with caplog.at_level(logging.WARNING):
        again = load_corpus(text_corpus, cache_dir=tmp_path / "cache")
    (warning,) = unreadable_warnings(caplog, npz)
    assert warning.endswith("building it again")
    assert again.stats["cache"] == "miss" and again.vocab == first.vocab
    assert [len(s) for s in again.splits["train"].sentences] == [len(s) for s in first.splits["train"].sentences]
    assert load_corpus(text_corpus, cache_dir=tmp_path / "cache").stats["cache"] == "hit"


def test_a_truncated_kneser_ney_cache_entry_is_rebuilt_with_the_same_scores(
    tmp_path: Path, text_corpus: DatasetConfig, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = load_corpus(text_corpus, cache_dir=tmp_path / "cache")
    cfg = KneserNeyConfig(orders=[2])
    first = baseline.baseline_metrics(corpus, "stateful", cfg, tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "kneser_ney").glob("kn-*.npz")
    truncate(entry)
    with caplog.at_level(logging.WARNING):
        again = baseline.baseline_metrics(corpus, "stateful", cfg, tmp_path / "cache")
    assert len(unreadable_warnings(caplog, entry)) == 1
    assert again == first and 1 < first["kn2_test_ppl"] < 50
    with np.load(entry) as rebuilt:  # whole again
        assert sorted(rebuilt.files) == ["test", "valid"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("trained")
    train(compose_run(folder, "experiment_name=caches"))
    mlflow = client(folder)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("caches").experiment_id])
    return folder, run.info.run_id


def test_a_damaged_local_copy_of_a_downloaded_checkpoint_is_fetched_again(
    trained_run: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, run_id = trained_run
    mlflow = client(folder)
    first = trained.local_checkpoint(mlflow, run_id, "best.npz", tmp_path / "copies")
    good = first.read_bytes()
    truncate(first)
    with caplog.at_level(logging.WARNING):
        again = trained.local_checkpoint(mlflow, run_id, "best.npz", tmp_path / "copies")
    assert again == first and again.read_bytes() == good
    (warning,) = unreadable_warnings(caplog, first)
    assert f"fetching it again from run {run_id}" in warning


def test_a_checkpoint_folder_that_cannot_be_written_names_checkpoint_dir(
    trained_run: tuple[Path, str], tmp_path: Path
) -> None:
    folder, run_id = trained_run
    (tmp_path / "a file").write_text("")
    with pytest.raises(
        UserError, match=r"^cannot copy run \w+'s checkpoint into .*: set checkpoint_dir= to a writable"
    ):
        trained.local_checkpoint(client(folder), run_id, "best.npz", tmp_path / "a file")


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ('{"words": ["a", "b"', "Expecting"),  # truncated
        ('{"words": ["a", "b"]}', "missing key 'unknown'"),  # not a vocabulary
    ],
)
def test_a_damaged_vocabulary_is_one_line_naming_it(tmp_path: Path, content: str, detail: str) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text(content)
    with pytest.raises(UserError, match=rf"^{vocab} is not a readable rnnexp vocabulary \({detail}.*\): it is damaged"):
        trained.load_vocabulary(vocab)


def test_generate_with_a_vocabulary_of_another_size_is_one_line(trained_run: tuple[Path, str], tmp_path: Path) -> None:
    folder, run_id = trained_run
    mlflow = client(folder)
    artifacts = Path(mlflow.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    original = (artifacts / "vocab.json").read_text()
    smaller = json.loads(original)
    smaller["words"] = smaller["words"][:-1]  # the rarest word: the vocabulary of another run of this data
    (artifacts / "vocab.json").write_text(json.dumps(smaller))
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rnnexp.generate",
                f"run_id={run_id}",
                f"tracking_uri=sqlite:///{folder}/mlflow.db",
                f"checkpoint_dir={tmp_path}/checkpoints",
                f"hydra.run.dir={tmp_path}/hydra",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        (artifacts / "vocab.json").write_text(original)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: run {run_id}'s vocab.json artifact does not fit the checkpoint {tmp_path}/")
    assert f"a model over its {len(smaller['words'])} words" in line and "not the vocabulary the run trained" in line
