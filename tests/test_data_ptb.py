"""Penn Treebank files: the real validation split as a stand-in for all three, sentence and stream modes."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnexp.data import DatasetConfig, load_corpus
from rnnexp.data import download as download_module
from rnnexp.data.ptb import read_sentences
from rnnexp.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PTB_VALID = SHARED_DATA / "ptb.valid.txt"
needs_ptb = pytest.mark.skipif(not PTB_VALID.exists(), reason=f"{PTB_VALID} is absent")
pytestmark = pytest.mark.filterwarnings("ignore:dataset.vocab_size=:UserWarning")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setattr(download_module, "urlopen", None)  # any download attempt fails loudly
    monkeypatch.setenv("RNNEXP_DATA_DIR", str(tmp_path / "empty"))


@pytest.fixture
def ptb_dir(tmp_path):
    """The real validation split under all three names."""
    directory = tmp_path / "ptb"
    directory.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(PTB_VALID, directory / f"ptb.{split}.txt")
    return directory


def write_ptb(directory, train, valid, test):
    directory.mkdir(exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (directory / f"ptb.{split}.txt").write_text(text)
    return directory


@needs_ptb
def test_reader_appends_eos_to_every_line():
    sentences = read_sentences(PTB_VALID)
    assert len(sentences) == 3370
    assert sum(len(s) - 2 for s in sentences) == 70390
    assert sentences[0][:6] == ["<eos>", "consumers", "may", "want", "to", "move"]
    assert all(s[0] == s[-1] == "<eos>" for s in sentences)


@needs_ptb
def test_sentence_mode_on_the_real_file(ptb_dir, tmp_path):
    with pytest.warns(
        UserWarning,
        match=r"dataset.vocab_size=10000 is more than the 6021 distinct training tokens "
        r"plus <unk>: using 6022 \(3978 fewer\)",
    ):
        corpus = load_corpus(
            DatasetConfig(name="ptb", path=str(ptb_dir), vocab_size=10000), cache_dir=tmp_path / "cache"
        )
    vocab = corpus.vocab
    assert len(vocab) == 6022
    assert vocab.words[:3] == ["<eos>", "the", "N"] and vocab.words[-1] == "<unk>"
    assert vocab.start_id == vocab.end_id == 0 and vocab.unknown_id == 6021
    valid = corpus.splits["valid"]
    assert len(valid) == 3370
    assert valid.n_targets == 73760  # 70390 words + 3370 <eos>, the usual PTB validation count
    stream = valid.stream()
    assert len(stream) == 73761 and stream[0] == 0  # led by one <eos>, each <eos> once
    assert np.count_nonzero(stream == 0) == 3371
    assert corpus.stats["valid.unknown_fraction"] == pytest.approx(3485 / 73761)


@needs_ptb
def test_stream_mode_cuts_the_same_stream_into_overlapping_segments(ptb_dir, tmp_path):
    settings = dict(name="ptb", path=str(ptb_dir / "ptb.train.txt"), vocab_size=10000)
    sentences = load_corpus(DatasetConfig(**settings), cache_dir=tmp_path / "cache")
    streamed = load_corpus(
        DatasetConfig(mode="stream", stream_sequence_length=35, **settings), cache_dir=tmp_path / "cache"
    )
    segments = streamed.splits["test"].sentences
    assert len(segments) == -(-73760 // 35)
    assert {len(s) for s in segments[:-1]} == {36} and len(segments[-1]) == 73760 % 35 + 1
    assert all(a[-1] == b[0] for a, b in zip(segments, segments[1:]))
    assert streamed.splits["test"].n_targets == 73760
    assert np.array_equal(streamed.splits["test"].stream(), sentences.splits["test"].stream())
    assert streamed.digest != sentences.digest


def test_small_vocabulary_maps_rare_words_to_unk(tmp_path):
    directory = write_ptb(tmp_path / "ptb", " a b a c <unk>\n a b\n", " a d\n", " z\n")
    corpus = load_corpus(DatasetConfig(name="ptb", path=str(directory), vocab_size=4), cache_dir=tmp_path / "c")
    assert corpus.vocab.words == ["<eos>", "a", "b", "<unk>"]
    assert [s.tolist() for s in corpus.splits["train"].sentences] == [[0, 1, 2, 1, 3, 3, 0], [0, 1, 2, 0]]
    assert [s.tolist() for s in corpus.splits["valid"].sentences] == [[0, 1, 3, 0]]
    assert corpus.splits["train"].stream().tolist() == [0, 1, 2, 1, 3, 3, 0, 1, 2, 0]


def test_max_sentences_shrinks_every_file_by_the_same_share(tmp_path):
    lines = "".join(f" w{i % 7} x\n" for i in range(100))
    directory = write_ptb(tmp_path / "ptb", lines, lines[: len(lines) // 2], lines[: len(lines) // 4])
    corpus = load_corpus(
        DatasetConfig(name="ptb", path=str(directory), vocab_size=9, max_sentences=10), cache_dir=tmp_path / "c"
    )
    assert [len(corpus.splits[s]) for s in ("train", "valid", "test")] == [10, 5, 3]


def test_missing_files_explain_where_to_get_them(tmp_path):
    with pytest.raises(
        UserError,
        match=r"ptb.train.txt is not at .*empty/ptb.train.txt; get it from "
        r"data/ptb.\*.txt inside Mikolov's simple-examples.tgz",
    ):
        load_corpus(DatasetConfig(name="ptb", vocab_size=100), cache_dir=tmp_path / "c")
    directory = write_ptb(tmp_path / "ptb", " a\n", " a\n", " a\n")
    (directory / "ptb.test.txt").unlink()
    with pytest.raises(UserError, match="ptb.test.txt does not exist .*simple-examples.tgz"):
        load_corpus(DatasetConfig(name="ptb", path=str(directory), vocab_size=100), cache_dir=tmp_path / "c")
    with pytest.raises(UserError, match="Only 1 lines are left, too few for valid_fraction=0.1"):
        load_corpus(
            DatasetConfig(name="ptb", path=str(directory / "ptb.valid.txt"), vocab_size=100), cache_dir=tmp_path / "c"
        )


def test_one_file_is_split_by_lines_in_file_order_and_stands_in_for_a_missing_corpus(tmp_path):
    lines = [" a" * (i + 1) + "\n" for i in range(20)]  # line i has i + 1 words: its length names it
    source = tmp_path / "one.txt"
    source.write_text("".join(lines))
    split = DatasetConfig(name="ptb", path=str(source), vocab_size=100, valid_fraction=0.1, test_fraction=0.05)
    corpus = load_corpus(split, cache_dir=tmp_path / "c")
    lines_of = {name: [len(s) - 2 for s in part.sentences] for name, part in corpus.splits.items()}
    assert lines_of == {"train": list(range(1, 18)), "valid": [18, 19], "test": [20]}
    fallback = DatasetConfig(
        name="ptb",
        data_dir=str(tmp_path / "empty"),
        fallback_path=str(source),
        vocab_size=100,
        valid_fraction=0.1,
        test_fraction=0.05,
    )
    assert load_corpus(fallback, cache_dir=tmp_path / "c").digest == corpus.digest  # where a file is found is no part


def test_an_empty_split_file_is_a_user_error(tmp_path):
    directory = write_ptb(tmp_path / "ptb", " a b\n", "\n\n", " a\n")
    with pytest.raises(UserError, match="ptb.valid.txt is empty"):
        load_corpus(DatasetConfig(name="ptb", path=str(directory), vocab_size=100), cache_dir=tmp_path / "c")
