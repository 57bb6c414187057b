"""Vocabulary: id mapping, JSON round trip, and the tutorial's frequency ranking with its tie rule."""

import numpy as np
import pytest

from rnnexp.data.vocab import UNKNOWN_TOKEN, Vocabulary, build_vocabulary


def test_index_encode_decode_and_unknown_mapping():
    vocab = Vocabulary(["<s>", "</s>", "a", "b", "?"], unknown="?", start="<s>", end="</s>")
    assert (vocab.start_id, vocab.end_id, vocab.unknown_id) == (0, 1, 4)
    assert vocab.index("b") == 3
    assert vocab.index("never seen") == 4
    ids = vocab.encode(["<s>", "a", "zzz", "b", "</s>"])
    assert ids.dtype == np.int32
    assert ids.tolist() == [0, 2, 4, 3, 1]
    assert vocab.decode(ids) == ["<s>", "a", "?", "b", "</s>"]
    assert len(vocab) == 5 and "a" in vocab and "zzz" not in vocab


def test_without_unknown_token_an_unknown_word_is_a_key_error():
    vocab = Vocabulary(["x", "y"])
    assert vocab.unknown_id is None and vocab.start_id is None
    with pytest.raises(KeyError):
        vocab.index("z")
    with pytest.raises(KeyError):
        vocab.encode(["x", "z"])


def test_json_and_file_round_trip(tmp_path):
    vocab = Vocabulary(["S", "E", "é", "U"], unknown="U", start="S", end="E", separator="")
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.words == ["S", "E", "é", "U"]
    assert (loaded.unknown_id, loaded.start_id, loaded.end_id, loaded.separator) == (3, 0, 1, "")


def test_duplicate_words_and_missing_specials_are_rejected():
    with pytest.raises(ValueError):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError):
        Vocabulary(["a"], unknown="U")


def test_ranking_is_count_then_first_occurrence():
    sentences = [["b", "a", "c"], ["a", "b", "d"], ["e"]]
    vocab, report = build_vocabulary(sentences, 4)
    # a and b both appear twice; b was seen first. c, d, e once each; c was seen first.
    assert vocab.words == ["b", "a", "c", UNKNOWN_TOKEN]
    assert vocab.unknown_id == 3
    assert (report.unique_tokens, report.least_frequent_word, report.least_frequent_count) == (5, "c", 1)
    assert report.clamp_warning is None


def test_vocab_size_above_the_data_is_clamped_with_a_warning_saying_by_how_much():
    vocab, report = build_vocabulary([["x", "y", "x"]], 10)
    assert vocab.words == ["x", "y", UNKNOWN_TOKEN]
    assert report.size == 3 and report.requested_size == 10
    assert report.clamp_warning == (
        "dataset.vocab_size=10 is more than the 2 distinct training tokens plus UNKNOWN_TOKEN: using 3 (7 fewer)."
    )


def test_boundary_tokens_are_kept_even_when_rarer_than_other_tokens():
    sentences = [["S", "e", "e", "e", "t", "t", "E"]]
    vocab, _ = build_vocabulary(sentences, 4, keep=("S", "E"), start="S", end="E")
    assert vocab.words == ["e", "S", "E", UNKNOWN_TOKEN]


def test_an_unknown_token_in_the_data_goes_last_not_by_rank():
    vocab, report = build_vocabulary([["<unk>", "<unk>", "<unk>", "w", "v", "w"]], 3, unknown="<unk>")
    assert vocab.words == ["w", "v", "<unk>"]
    assert report.unique_tokens == 3
