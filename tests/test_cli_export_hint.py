"""`tinygpt export` prints the line the weights guide shows: the class the folder was written as, and its
tokenizer."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from tinygpt import GPT, ModelConfig
from tinygpt.tokenizers import CharTokenizer
from tinygpt.training.checkpoint import save_checkpoint

GUIDE = Path(__file__).resolve().parents[1] / "docs/guides/weights.md"


def test_the_export_hint_is_the_guides(cli, tmp_path):
    shown = re.search(r"^exported runs/gpt2-mine/best to gpt2-mine-hf: .*\n(load it with transformers: .*)$",
                      GUIDE.read_text(encoding="utf-8"), re.MULTILINE)
    assert shown, "the weights guide shows what export prints"
    tok = CharTokenizer.train("the cat sat on the mat")
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size))
    save_checkpoint(tmp_path / "gpt2-mine" / "best", model, tok, {"step": 0})
    code, out, err = cli("export", tmp_path / "gpt2-mine", "--format", "hf", "--out", tmp_path / "gpt2-mine-hf")
    assert code == 0, err
    hint = out.splitlines()[1].replace(str(tmp_path / "gpt2-mine-hf"), "gpt2-mine-hf")
    assert hint == shown.group(1)
