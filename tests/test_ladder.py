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
    for r in rows:
        assert r["params"] > 0 and r["val_loss"] > 0 and len(r["sample"]) > 0
        assert r["bits_per_char"] == pytest.approx(r["val_loss"] / 0.693147, rel=1e-3)  # one token per char
    assert "bigram" in text and "bits/char" in text
    code, _, err = cli("ladder", "--data", text_file, "--out", out, "--rungs", "bigram", "--max_iters=1", *flags)
    assert code != 0 and "already holds a ladder" in err
    code, _, err = cli("ladder", "--data", text_file, "--out", tmp_path / "x", "--rungs", "trigram", *flags)
    assert code != 0 and "unknown rung" in err
