"""The tutorial's reddit pipeline on a handmade CSV (exact ids) and on the real excerpt."""

import logging
import shutil
from pathlib import Path

import pytest

from rnnexp.data import DatasetConfig, load_corpus, reddit
from rnnexp.data import download as download_module
from rnnexp.data.download import RemoteFile, git_blob_id
from rnnexp.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
EXCERPT = SHARED_DATA / "reddit-comments-2015-08.head.csv"
# what each test is not about: warnings of dropped short sentences and clamped vocabularies
pytestmark = pytest.mark.filterwarnings("ignore:Dropped:UserWarning", "ignore:dataset.vocab_size=:UserWarning")
HANDMADE = 'body\n"The cat sat. The dog ran!"\n"A cat ran."\nOk\n"He said ""no"". The end?"\n'


@pytest.fixture(autouse=True)
def offline_without_punkt_tab(monkeypatch, tmp_path):
    """No network, no stray data dir, and the corpus-trained Punkt whatever nltk data is installed."""

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(download_module, "urlopen", no_network)
    monkeypatch.setenv("RNNEXP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("nltk.tokenize.punkt_model_available", lambda *args, **kwargs: False)


def config(path, **overrides):
    settings = dict(
        name="reddit",
        path=str(path),
        vocab_size=8,
        lowercase=True,
        min_sentence_tokens=3,
        valid_fraction=0.0,
        test_fraction=0.0,
    )
    return DatasetConfig(**{**settings, **overrides})


def write(tmp_path, text, name="comments.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_handmade_csv_gives_the_tutorial_ids(tmp_path):
    with pytest.warns(UserWarning, match="Dropped 1 of 6 sentences with 3 tokens or fewer"):
        corpus = load_corpus(config(write(tmp_path, HANDMADE)), cache_dir=tmp_path / "cache")
    # counts: START 5, END 5, the 3, . 3, cat 2, ran 2, then once each; ties keep first occurrence
    assert corpus.vocab.words == ["SENTENCE_START", "SENTENCE_END", "the", ".", "cat", "ran", "sat", "UNKNOWN_TOKEN"]
    assert (corpus.vocab.start_id, corpus.vocab.end_id, corpus.vocab.unknown_id) == (0, 1, 7)
    assert [s.tolist() for s in corpus.splits["train"].sentences] == [
        [0, 2, 4, 6, 3, 1],  # the cat sat .
        [0, 2, 7, 5, 7, 1],  # the dog ran !
        [0, 7, 4, 5, 3, 1],  # a cat ran .
        [0, 7, 7, 7, 7, 7, 3, 1],  # he said `` no '' .
        [0, 2, 7, 7, 1],  # the end ?
    ]
    assert len(corpus.splits["valid"]) == len(corpus.splits["test"]) == 0
    assert corpus.stats["unique_tokens"] == 17
    assert (corpus.stats["least_frequent_word"], corpus.stats["least_frequent_count"]) == ("sat", 1)
    assert corpus.params["dataset.sentence_tokenizer"] == "punkt_trained_on_corpus"
    assert corpus.params["dataset.word_tokenizer"] == "NLTKWordTokenizer"
    assert corpus.stats["train.unknown_fraction"] == pytest.approx(10 / 31)


def test_x_and_y_are_the_sentence_shifted_by_one(tmp_path):
    corpus = load_corpus(config(write(tmp_path, HANDMADE)), cache_dir=tmp_path / "cache")
    sentence = corpus.splits["train"].sentences[0]
    x, y = sentence[:-1], sentence[1:]
    assert x.tolist() == [0, 2, 4, 6, 3] and y.tolist() == [2, 4, 6, 3, 1]
    assert corpus.splits["train"].stream()[:7].tolist() == [0, 2, 4, 6, 3, 1, 0]


def test_tutorial_statistics_are_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rnnexp.data"):
        load_corpus(config(write(tmp_path, HANDMADE)), cache_dir=tmp_path / "cache")
    assert "Parsed 6 sentences." in caplog.messages
    assert "Found 17 unique words tokens." in caplog.messages
    assert "Using vocabulary size 8." in caplog.messages
    assert "The least frequent word in our vocabulary is 'sat' and appeared 1 times." in caplog.messages


def test_split_is_by_comment_and_seeded(tmp_path):
    # comment i is "Hello la la ... ! Bye la la ... !" with i times "la": a sentence's length names its comment
    comments = "".join(f'"Hello {"la " * i}! Bye {"la " * i}!"\n' for i in range(40))
    path = write(tmp_path, "body\n" + comments)

    def comment_numbers(corpus, split):
        return [len(sentence) - 4 for sentence in corpus.splits[split].sentences]

    settings = dict(vocab_size=60, valid_fraction=0.25, test_fraction=0.25)
    corpus = load_corpus(config(path, **settings), cache_dir=tmp_path / "cache")
    assert [len(corpus.splits[name]) for name in ("train", "valid", "test")] == [40, 20, 20]
    numbers = {split: comment_numbers(corpus, split) for split in corpus.splits}
    for found in numbers.values():  # both sentences of a comment, side by side, in one split
        assert found[::2] == found[1::2]
        assert found[::2] == sorted(found[::2])  # source order kept
    assert sorted(n for found in numbers.values() for n in found[::2]) == list(range(40))
    reseeded = load_corpus(config(path, split_seed=1, **settings), cache_dir=tmp_path / "cache")
    assert comment_numbers(reseeded, "valid") != numbers["valid"]


def test_the_vocabulary_comes_from_the_training_split_only(tmp_path):
    comments = "".join(f'"common words here and xyz{i} too."\n' for i in range(10))
    path = write(tmp_path, "body\n" + comments)
    corpus = load_corpus(
        config(path, vocab_size=100, valid_fraction=0.2, test_fraction=0.0), cache_dir=tmp_path / "cache"
    )
    held_out = {w for s in corpus.splits["valid"].sentences for w in corpus.vocab.decode(s)}
    assert "UNKNOWN_TOKEN" in held_out and not any(w.startswith("xyz") for w in held_out)


def test_truncated_last_comment_is_dropped_with_a_warning(tmp_path):
    path = write(tmp_path, HANDMADE + '"This comment never ends.\nIt is cut off')
    with pytest.warns(
        UserWarning,
        match=r"ends inside a quoted field: dropped the incomplete last comment "
        r"\(line 6 to the end, 38 characters\) and kept the 4 complete ones",
    ):
        corpus = load_corpus(config(path), cache_dir=tmp_path / "cache")
    assert len(corpus.splits["train"]) == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b'text\n"hello there world."\n', "has no 'body' column"),
        (b'body\n"ok"\n"hi"\n', "has no usable sentence: all 2 have 3 tokens or fewer"),
        (b"body\n", "has no comments under its 'body' header"),
        (b"body\n" + b"x" * 200_000 + b"\n", r"is not valid CSV at line 2 \(field larger than field limit"),
        (b'body\n"caf\xe9 is nice here."\n', r"is not UTF-8: byte 0xe9 at line 2, column 5 \(byte offset 9\)"),
    ],
)
def test_bad_files_are_one_sentence_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_corpus(config(path), cache_dir=tmp_path / "cache")


def test_missing_file_offline_says_where_to_put_it_and_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as error:
        load_corpus(config(tmp_path / "nope.csv"), cache_dir=tmp_path / "cache")
    assert "does not exist" in str(error.value) and download_module.REDDIT_URL in str(error.value)
    with pytest.raises(UserError) as error:
        load_corpus(DatasetConfig(name="reddit", vocab_size=8), cache_dir=tmp_path / "cache")
    expected_place = tmp_path / "data" / "reddit-comments-2015-08.csv"
    assert f"is not at {expected_place} and downloading it failed" in str(error.value)
    assert download_module.REDDIT_URL in str(error.value)


def test_a_missing_file_is_downloaded_and_verified_by_git_blob_id(tmp_path, monkeypatch):
    payload = HANDMADE.encode()
    fake = RemoteFile("reddit-comments-2015-08.csv", "https://example.invalid/r.csv", git_blob_id(payload), "x")
    monkeypatch.setattr(reddit, "REDDIT", fake)
    monkeypatch.setattr(download_module, "urlopen", lambda url, timeout: FakeResponse(payload))
    corpus = load_corpus(
        DatasetConfig(
            name="reddit", vocab_size=8, lowercase=True, min_sentence_tokens=3, valid_fraction=0, test_fraction=0
        ),
        cache_dir=tmp_path / "cache",
    )
    assert (tmp_path / "data" / "reddit-comments-2015-08.csv").read_bytes() == payload
    assert len(corpus.splits["train"]) == 5
    assert git_blob_id(payload) == git_blob_id_by_git_formula(payload)


def test_a_download_with_the_wrong_bytes_is_refused(tmp_path, monkeypatch):
    fake = RemoteFile("r.csv", "https://example.invalid/r.csv", "0" * 40, "the tutorial")
    monkeypatch.setattr(download_module, "urlopen", lambda url, timeout: FakeResponse(b"tampered"))
    with pytest.raises(UserError, match="has git blob id .* not the expected 0000"):
        download_module.fetch(fake, tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()


def test_pretrained_punkt_is_used_and_recorded_when_installed(tmp_path, monkeypatch):
    monkeypatch.setattr("nltk.tokenize.punkt_model_available", lambda *args, **kwargs: True)
    monkeypatch.setattr("nltk.sent_tokenize", lambda text: text.split(". "))
    monkeypatch.setattr("nltk.word_tokenize", lambda text: text.split())
    corpus = load_corpus(
        config(write(tmp_path, 'body\n"one two three. four five six"\n'), vocab_size=20), cache_dir=tmp_path / "cache"
    )
    assert corpus.params["dataset.sentence_tokenizer"] == "punkt_tab"
    assert corpus.params["dataset.word_tokenizer"] == "nltk.word_tokenize"
    assert [corpus.vocab.decode(s) for s in corpus.splits["train"].sentences] == [
        ["SENTENCE_START", "one", "two", "three", "SENTENCE_END"],
        ["SENTENCE_START", "four", "five", "six", "SENTENCE_END"],
    ]


@pytest.mark.skipif(not EXCERPT.exists(), reason=f"{EXCERPT} is absent")
def test_real_excerpt_reads_up_to_the_last_complete_comment(tmp_path, caplog):
    path = tmp_path / "excerpt.csv"
    shutil.copy(EXCERPT, path)
    dropped = r"dropped the incomplete last comment \(line 874 to the end, 6061 characters\) and kept the 211"
    with pytest.warns(UserWarning, match=dropped), caplog.at_level(logging.INFO, logger="rnnexp.data"):
        corpus = load_corpus(config(path, vocab_size=8000), cache_dir=tmp_path / "cache")
    assert corpus.stats["comments"] == 211
    assert corpus.stats["sentences_parsed"] == 1089
    assert corpus.stats["sentences_dropped_short"] == 20
    assert "Parsed 1089 sentences." in caplog.messages
    assert len(corpus.vocab) == corpus.stats["unique_tokens"] + 1  # 8000 clamped to what the data has
    assert corpus.vocab.words[:3] == ["SENTENCE_START", "SENTENCE_END", "."]
    first = corpus.vocab.decode(corpus.splits["train"].sentences[0])
    assert first[:6] == ["SENTENCE_START", "i", "joined", "a", "new", "league"]
    assert first[-3:] == ["to", ".", "SENTENCE_END"]


class FakeResponse:
    def __init__(self, payload):
        self.payload = payload

    def read(self):
        return self.payload

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def git_blob_id_by_git_formula(data):
    import hashlib

    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
