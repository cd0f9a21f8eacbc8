import json

import pytest

from conftest import TINY_FLAGS
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, TokenizerError, load_tokenizer
from tinygpt.tokenizers.choose import tokenizer_for_training


def test_char_bpe_and_file(tmp_path, play):
    text = play[:5000]
    tok, _ = tokenizer_for_training("char", text)
    assert isinstance(tok, CharTokenizer) and tok.chars == sorted(set(text)) and tok.specials == ["<unk>"]
    bpe, how = tokenizer_for_training("bpe", text, 300, tmp_path)
    assert isinstance(bpe, ByteBPETokenizer) and bpe.vocab_size == 300 and "trained" in how
    assert len(bpe.merges) == 300 - 256 and bpe.decode(bpe.encode(text)) == text
    assert bpe.merges == ByteBPETokenizer.train(text, 300).merges  # trained on exactly the text given
    again, how = tokenizer_for_training("bpe", text, 300, tmp_path)
    assert again == bpe and "reused" in how
    other, how = tokenizer_for_training("bpe", text + "x", 300, tmp_path)
    assert "trained" in how  # another text is another cache entry
    bpe.save(tmp_path / "mine.json")
    given, _ = tokenizer_for_training(str(tmp_path / "mine.json"), "unused")
    assert given == bpe
    with pytest.raises(TokenizerError, match="> 256"):
        tokenizer_for_training("bpe", text, 200, tmp_path)
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        tokenizer_for_training("sentencepiece", text)
    with pytest.raises(TokenizerError, match="brings its own vocabulary"):  # not silently ignored
        tokenizer_for_training(str(tmp_path / "mine.json"), "unused", 1000)


def test_train_with_bpe_reports_bits_per_byte(cli, tmp_path, text_file, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", text_file, "--out", out, "--tokenizer", "bpe", "--vocab_size", "300",
                       "--max_iters=2", *TINY_FLAGS)
    assert code == 0, err
    assert "bits/byte" in err
    assert json.loads((out / "latest/config.json").read_text())["tokenizer"] == "bpe"
    code, text, _ = cli("eval", out, "--json")
    res = json.loads(text)
    # the val split is the last 10 % of the characters; its BPE tokens, less the first, are predicted
    whole = text_file.read_text(encoding="utf-8")
    val = whole[int(len(whole) * 0.9):]
    tok = load_tokenizer(out / "latest/tokenizer.json")
    ids = tok.encode(val)
    assert res["tokens"] == len(ids) - 1
    predicted_bytes = len(val.encode("utf-8")) - len(tok.decode(ids[:1]).encode("utf-8"))
    assert res["bits_per_byte"] == pytest.approx(res["loss"] * res["tokens"] / predicted_bytes / 0.693147, rel=1e-4)
    assert res["bits_per_byte"] < res["loss"] / 0.6931  # BPE tokens cover more than one byte on average
    assert res["bits_per_char"] == pytest.approx(res["bits_per_byte"])  # the text is ASCII
