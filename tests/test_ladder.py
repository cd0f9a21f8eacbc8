import json

import pytest

from conftest import TINY_FLAGS


def test_ladder_trains_each_rung_and_reports(cli, tmp_path, text_file):
    out = tmp_path / "ladder"
    flags = [f for f in TINY_FLAGS if not f.startswith("--eval_interval")]
    code, text, err = cli("ladder", "--data", text_file, "--out", out, "--rungs", "bigram,multi_head,gpt_no_mlp",
                          "--max_iters=4", "--eval_interval=2", *flags)
    assert code == 0, err
    rows = json.loads((out / "ladder.json").read_text())
    assert [r["model"] for r in rows] == ["bigram", "multi_head", "gpt_no_mlp"]
    data = text_file.read_text(encoding="utf-8")
    vocab = len(set(data[:int(len(data) * 0.9)])) + 1  # the training split's characters and <unk>
    assert rows[0]["params"] == vocab * vocab  # the bigram is a vocab x vocab table
    for r in rows:
        assert len(r["sample"]) == 80  # sample_chars tokens, one character each
        assert r["bits_per_char"] == pytest.approx(r["val_loss"] / 0.693147, rel=1e-3)  # one token per char
        # val_loss is the exact loss of the rung's best checkpoint, as `tinygpt eval` computes it
        code, ev, err = cli("eval", out / r["model"], "--data", text_file, "--json")
        assert code == 0, err
        assert r["val_loss"] == pytest.approx(json.loads(ev)["loss"], rel=1e-5)
    assert "bigram" in text and "bits/char" in text
    code, _, err = cli("ladder", "--data", text_file, "--out", out, "--rungs", "bigram", "--max_iters=1", *flags)
    assert code != 0 and "already holds a ladder" in err
    code, _, err = cli("ladder", "--data", text_file, "--out", tmp_path / "x", "--rungs", "trigram", *flags)
    assert code != 0 and "unknown rung" in err
