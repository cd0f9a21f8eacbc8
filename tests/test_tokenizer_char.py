import warnings

import pytest

from tinygpt.tokenizers import CharTokenizer, TokenizerError, load_tokenizer


def test_vocabulary_is_specials_then_sorted_chars():
    tok = CharTokenizer.train("hello")
    assert tok.itos == ["<unk>", "e", "h", "l", "o"]
    assert tok.encode("hole") == [2, 4, 3, 1]
    assert tok.vocab_size == 5


@pytest.mark.parametrize("text", ["", "a", "hello world\n", "ünï😀 中文\t\x00"])
def test_round_trip(text):
    tok = CharTokenizer.train(text or "x")
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


def test_unknown_characters_map_to_unk_with_one_warning():
    tok = CharTokenizer.train("abc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tok.encode("abz") == [1, 2, 0]
        assert tok.encode("zzy") == [0, 0, 0]
    assert len(caught) == 1 and "'z'" in str(caught[0].message)
    assert tok.decode([0]) == "\N{REPLACEMENT CHARACTER}"


def test_save_load_same_ids(tmp_path):
    tok = CharTokenizer.train("To be, or not to be: that is the question.\n")
    tok.save(tmp_path / "tok.json")
    back = load_tokenizer(tmp_path / "tok.json")
    assert back == tok
    assert back.encode("not to be") == tok.encode("not to be")


def test_bad_files(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(tmp_path / "bad.json")
    (tmp_path / "kind.json").write_text('{"type": "klingon"}')
    with pytest.raises(TokenizerError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path / "kind.json")
    (tmp_path / "mal.json").write_text('{"type": "char"}')
    with pytest.raises(TokenizerError, match="malformed"):
        load_tokenizer(tmp_path / "mal.json")
