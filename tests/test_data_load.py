"""load_corpus: config checking, the npz + JSON cache, and what a cached load repeats."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rnnexp.data import DatasetConfig, Split, download, load_corpus, sources
from rnnexp.data.cache import entry_paths
from rnnexp.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
EXCERPT = SHARED_DATA / "reddit-comments-2015-08.head.csv"
pytestmark = pytest.mark.filterwarnings("ignore:dataset.vocab_size=:UserWarning")


def text_config(path, **overrides):
    return DatasetConfig(
        **{**dict(name="text", path=str(path), vocab_size=50, valid_fraction=0.25, test_fraction=0.25), **overrides}
    )


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "source.txt"
    path.write_text("".join(f"the quick fox {i} jumps\n" for i in range(8)))
    return path


def test_second_load_is_a_cache_hit_with_the_same_data(text_file, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_corpus(text_config(text_file), cache_dir=cache_dir)
    second = load_corpus(text_config(text_file), cache_dir=cache_dir)
    assert (first.stats["cache"], second.stats["cache"]) == ("miss", "hit")
    assert second.vocab == first.vocab and second.digest == first.digest
    assert second.params == first.params
    for name in ("train", "valid", "test"):
        assert [s.tolist() for s in second.splits[name].sentences] == [s.tolist() for s in first.splits[name].sentences]
        assert all(s.dtype == np.int32 for s in second.splits[name].sentences)
    npz, meta = entry_paths(cache_dir, "text", first.digest)
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([npz.name, meta.name])
    with np.load(npz, allow_pickle=False) as arrays:
        assert arrays["train.lengths"].tolist() == [7, 7, 7, 7]
    assert json.loads(meta.read_text())["vocab"]["words"][0] == "SENTENCE_START"


def test_changed_file_or_setting_misses_moved_file_hits(text_file, tmp_path):
    cache_dir = tmp_path / "cache"
    base = load_corpus(text_config(text_file), cache_dir=cache_dir)
    other_size = load_corpus(text_config(text_file, vocab_size=10), cache_dir=cache_dir)
    assert other_size.stats["cache"] == "miss" and other_size.digest != base.digest
    moved = tmp_path / "elsewhere.txt"
    moved.write_bytes(text_file.read_bytes())
    assert load_corpus(text_config(moved), cache_dir=cache_dir).stats["cache"] == "hit"
    text_file.write_text(text_file.read_text() + "a new line here\n")
    changed = load_corpus(text_config(text_file), cache_dir=cache_dir)
    assert changed.stats["cache"] == "miss" and changed.digest != base.digest


def test_a_damaged_cache_entry_is_rebuilt(text_file, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_corpus(text_config(text_file), cache_dir=cache_dir)
    npz, _ = entry_paths(cache_dir, "text", first.digest)
    npz.write_bytes(b"not an npz")
    again = load_corpus(text_config(text_file), cache_dir=cache_dir)
    assert again.stats["cache"] == "miss" and again.vocab == first.vocab
    assert load_corpus(text_config(text_file), cache_dir=cache_dir).stats["cache"] == "hit"


def test_warnings_are_repeated_on_a_cached_load(text_file, tmp_path):
    config = text_config(text_file, vocab_size=500)
    with pytest.warns(UserWarning, match="dataset.vocab_size=500 is more than"):
        load_corpus(config, cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="dataset.vocab_size=500 is more than"):
        assert load_corpus(config, cache_dir=tmp_path / "cache").stats["cache"] == "hit"


def test_an_unwritable_cache_only_warns(text_file, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="Could not cache the text dataset"):
        corpus = load_corpus(text_config(text_file), cache_dir=blocker / "cache")
    assert len(corpus.splits["train"]) == 4


def test_default_cache_dir_comes_from_the_environment(text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNEXP_CACHE_DIR", str(tmp_path / "env-cache"))
    corpus = load_corpus(text_config(text_file))
    assert entry_paths(tmp_path / "env-cache", "text", corpus.digest)[0].exists()


@pytest.mark.slow
@pytest.mark.skipif(not EXCERPT.exists(), reason=f"{EXCERPT} is absent")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cached_reddit_load_is_fast(tmp_path):
    config = DatasetConfig(name="reddit", path=str(EXCERPT), vocab_size=8000, lowercase=True, min_sentence_tokens=3)
    load_corpus(config, cache_dir=tmp_path)
    started = time.perf_counter()
    corpus = load_corpus(config, cache_dir=tmp_path)
    assert corpus.stats["cache"] == "hit"
    assert time.perf_counter() - started < 0.5


def test_dictconfig_node_with_root_interpolation():
    root = OmegaConf.create(
        {
            "vocab_size": 64,
            "seed": 3,
            "dataset": {
                "name": "synthetic",
                "vocab_size": "${vocab_size}",
                "synthetic": {"n_sentences": 100, "seed": None},
            },
        }
    )
    corpus = load_corpus(root.dataset, seed=root.seed)
    assert len(corpus.vocab) == 64
    assert corpus.stats["language_seed"] == 3
    assert sum(len(split) for split in corpus.splits.values()) == 100


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "wiki"}, "dataset.name='wiki' is not one of synthetic, reddit, ptb, text"),
        ({"vocab_size": 3}, "dataset.vocab_size=3 is too small: it must be at least 4"),
        ({"valid_fraction": 0.7, "test_fraction": 0.5}, "must sum to at most 1"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),
        ({"valid_fraction": -0.1}, "must be between 0 and 1"),
        ({"max_sentences": 0}, "max_sentences=0 must be at least 1"),
        ({"level": "byte"}, "dataset.level='byte' must be word or char"),
        ({"mode": "batch"}, "dataset.mode='batch' must be sentence or stream"),
        ({"min_sentence_tokens": -1}, "must be 0 or more"),
        ({"nme": "ptb"}, "Key 'nme' not in 'DatasetConfig'"),
        ({"vocab_size": "many"}, "Value 'many' of type 'str' could not be converted to Integer"),
    ],
)
def test_bad_configs_are_one_sentence_user_errors(settings, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_corpus(OmegaConf.create(settings))
    assert "\n" not in str(error.value)


def test_too_little_data_for_the_fractions_is_a_user_error(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("one line\nanother line\n")
    with pytest.raises(UserError, match="Only 2 lines are left, too few for valid_fraction=0.25"):
        load_corpus(text_config(path), cache_dir=tmp_path / "cache")


def test_split_stream_and_targets():
    plain = Split([np.array([0, 5, 1]), np.array([0, 6, 7, 1])])
    assert plain.stream().tolist() == [0, 5, 1, 0, 6, 7, 1] and plain.n_targets == 5
    shared = Split([np.array([9, 5, 9]), np.array([9, 6, 9])], shared_boundary=True)
    assert shared.stream().tolist() == [9, 5, 9, 6, 9]
    assert plain.oracle_nll is None and Split([]).stream().tolist() == []


def test_make_data_downloads_reddit_and_explains_ptb(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RNNEXP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(download, "urlopen", refuse_network)
    with pytest.raises(
        UserError,
        match=f"is not at {tmp_path}/reddit-comments-2015-08.csv and downloading "
        "it failed .*raw.githubusercontent.com/dennybritz/rnn-tutorial-rnnlm",
    ):
        sources.download_all()
    (tmp_path / "reddit-comments-2015-08.csv").write_text("body\n")
    sources.download_all()
    printed = capsys.readouterr().out
    assert "reddit-comments-2015-08.csv already exists." in printed
    assert "Penn Treebank: put ptb.train.txt, ptb.valid.txt, ptb.test.txt into" in printed
    assert "simple-examples.tgz" in printed


def refuse_network(*args, **kwargs):
    raise OSError("network disabled in tests")


@pytest.mark.slow
@pytest.mark.skipif(not EXCERPT.exists(), reason=f"{EXCERPT} is absent")
def test_parallel_jobs_that_miss_together_build_once(tmp_path):
    import subprocess
    import sys

    script = (
        "import warnings; warnings.simplefilter('ignore');"
        "from rnnexp.data import DatasetConfig, load_corpus;"
        f"c = load_corpus(DatasetConfig(name='reddit', path={str(EXCERPT)!r}, vocab_size=500), "
        f"cache_dir={str(tmp_path)!r});"
        "print(c.stats['cache'])"
    )
    jobs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    statuses = sorted(job.communicate(timeout=120)[0].strip() for job in jobs)
    assert statuses == ["hit", "miss"]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npz"]
