"""Plain text at word or character level: tiny Shakespeare and small handmade files."""

from pathlib import Path

import pytest

from rnnexp.data import DatasetConfig, load_corpus
from rnnexp.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt"
pytestmark = pytest.mark.filterwarnings("ignore:dataset.vocab_size=:UserWarning")


def load(path, tmp_path, **overrides):
    settings = dict(name="text", path=str(path), vocab_size=100, valid_fraction=0.0, test_fraction=0.0)
    return load_corpus(DatasetConfig(**{**settings, **overrides}), cache_dir=tmp_path / "cache")


def write(tmp_path, text):
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_word_level_ids_on_a_handmade_file(tmp_path):
    corpus = load(write(tmp_path, "Hello, world!\n\nhello world\n  \nBye.\n"), tmp_path, vocab_size=6)
    assert corpus.vocab.words == ["SENTENCE_START", "SENTENCE_END", "world", "Hello", ",", "UNKNOWN_TOKEN"]
    assert [s.tolist() for s in corpus.splits["train"].sentences] == [[0, 3, 4, 2, 5, 1], [0, 5, 2, 1], [0, 5, 5, 1]]
    assert corpus.vocab.separator == " "
    assert corpus.params["dataset.word_tokenizer"] == "wordpunct_tokenize"


def test_lowercase_merges_words(tmp_path):
    corpus = load(write(tmp_path, "Hello world\nhello World\n"), tmp_path, lowercase=True)
    assert corpus.vocab.words == ["SENTENCE_START", "hello", "world", "SENTENCE_END", "UNKNOWN_TOKEN"]


def test_split_is_contiguous_in_file_order(tmp_path):
    path = write(tmp_path, "".join(f"line {i}\n" for i in range(10)))
    corpus = load(path, tmp_path, valid_fraction=0.2, test_fraction=0.2)
    numbers = {name: [corpus.vocab.decode(s)[2] for s in split.sentences] for name, split in corpus.splits.items()}
    assert numbers["train"] == ["0", "1", "2", "3", "4", "5"]
    assert numbers["valid"] == ["UNKNOWN_TOKEN"] * 2 and numbers["test"] == ["UNKNOWN_TOKEN"] * 2


def test_short_lines_are_dropped_with_a_warning(tmp_path):
    path = write(tmp_path, "a b c\nd\ne f\n")
    with pytest.warns(UserWarning, match="Dropped 2 of 3 lines with 4 tokens or fewer"):
        corpus = load(path, tmp_path, min_sentence_tokens=4)
    assert len(corpus.splits["train"]) == 1
    with pytest.raises(UserError, match="has no usable line"):
        load(path, tmp_path, min_sentence_tokens=5)


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is absent")
def test_tiny_shakespeare_at_character_level(tmp_path):
    corpus = load(SHAKESPEARE, tmp_path, level="char", valid_fraction=0.1, test_fraction=0.1)
    assert [len(corpus.splits[name]) for name in ("train", "valid", "test")] == [26221, 3278, 3278]
    assert len(corpus.vocab) == 67  # 64 characters, the two boundaries and UNKNOWN_TOKEN
    assert corpus.vocab.separator == ""
    first = corpus.splits["train"].sentences[0]
    assert corpus.vocab.separator.join(corpus.vocab.decode(first[1:-1])) == "First Citizen:"
    small = load(SHAKESPEARE, tmp_path, level="char", vocab_size=30, max_sentences=100)
    assert len(small.vocab) == 30 and len(small.splits["train"]) == 100
    assert small.stats["train.unknown_fraction"] > 0


def test_missing_or_unset_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dataset=text needs dataset.path"):
        load_corpus(DatasetConfig(name="text"), cache_dir=tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load(tmp_path / "nothing.txt", tmp_path)
    with pytest.raises(UserError, match="is a directory, not a file"):
        load(tmp_path, tmp_path)


def test_bytes_that_are_not_utf8_are_located(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nna\xefve\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"is not UTF-8: byte 0xef at line 2, column 3"):
        load(path, tmp_path)
