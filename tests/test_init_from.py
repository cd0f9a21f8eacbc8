"""`train --init_from`: a new run starts from existing weights and their tokenizer (an imported GPT-2 or one of our
runs), with a fresh optimizer; its first losses are the losses of the model it started from."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_FLAGS
from hf_fixtures import CORPUS, hf_folder, small_bpe, tiny_hf_model
from tinygpt.data.text import TextData
from tinygpt.training.evaluate import evaluate
from tinygpt.interop.gpt2 import import_gpt2
from tinygpt.training.run import Run, load_checkpoint

FLAGS = ["--batch_size=4", "--eval_iters=2", "--eval_interval=2", "--log_interval=1", "--max_iters=2",
         "--device=cpu", "--dtype=float32", "--quiet"]


@pytest.fixture
def imported(tmp_path):
    tok = small_bpe()
    import_gpt2(hf_folder(tmp_path / "hf", tiny_hf_model(tok.vocab_size, seed=7), tok), tmp_path / "gpt2")
    return tmp_path / "gpt2"


def test_fine_tuning_an_imported_gpt2_starts_from_its_loss(cli, tmp_path, imported):
    """Step 0's evaluation and step 1's training loss (taken before the first update) are the imported model's
    losses on the same batches; block_size 8 crops the 16 position embeddings."""
    data = tmp_path / "text.txt"
    data.write_text(CORPUS, encoding="utf-8")
    code, _, err = cli("train", "--init_from", imported, "--data", data, "--out", tmp_path / "ft", "--block_size=8",
                       *FLAGS)
    assert code == 0, err
    assert f"starting from the weights of {imported.resolve()}" in err
    lines = Run(tmp_path / "ft").metrics()
    model, tok, _ = load_checkpoint(imported)
    source = TextData.from_text(CORPUS, tok, block_size=8)
    seed = 1337  # TrainConfig's default
    for split, key in (("train", "eval_train_loss"), ("val", "val_loss")):
        assert math.isclose(lines[0][key], evaluate(model, source, split, 2, 4, seed + 10_000, "cpu"), rel_tol=1e-6)
    x, y = source.get_batch("train", 4, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        first = model(x, y)[1].item()
    assert lines[1]["step"] == 1 and math.isclose(lines[1]["train_loss"], first, rel_tol=1e-6)
    cfg = Run(tmp_path / "ft").config("latest")
    assert cfg["init_from"]["path"] == str(imported.resolve()) and cfg["init_from"]["imported_from"].endswith("hf")
    assert cfg["model"]["block_size"] == 8 and cfg["model"]["activation"] == "gelu_tanh"
    assert Run(tmp_path / "ft").tokenizer() == tok
    # the run learned from those weights: they moved, and the cropped rows are the imported ones moved
    tuned, _, _ = load_checkpoint(tmp_path / "ft", "latest")
    wpe = model.transformer.wpe.weight[:8]
    assert tuned.transformer.wpe.weight.shape == wpe.shape and not torch.equal(tuned.transformer.wpe.weight, wpe)
    assert (tuned.transformer.wpe.weight - wpe).abs().max() < 0.05


def test_fine_tuning_our_own_character_run(cli, tmp_path, play):
    """A Shakespeare run fine-tuned on other text keeps its characters; its step-0 loss is the source's."""
    plays, sonnets = tmp_path / "plays.txt", tmp_path / "sonnets.txt"
    plays.write_text(play[:20_000], encoding="utf-8")
    sonnets.write_text("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n" * 50,
                       encoding="utf-8")
    assert cli("train", "--data", plays, "--out", tmp_path / "base", *TINY_FLAGS, "--max_iters=4")[0] == 0
    code, _, err = cli("train", "--init_from", tmp_path / "base", "--data", sonnets, "--out", tmp_path / "ft", *FLAGS,
                       "--dropout=0.1")
    assert code == 0, err
    base, tok, _ = load_checkpoint(tmp_path / "base")
    source = TextData.from_text(sonnets.read_text(encoding="utf-8"), tok, base.config.block_size)
    step0 = Run(tmp_path / "ft").metrics()[0]
    assert math.isclose(step0["eval_train_loss"], evaluate(base, source, "train", 2, 4, 1337 + 10_000, "cpu"),
                        rel_tol=1e-6)
    cfg = Run(tmp_path / "ft").config("latest")
    assert cfg["model"]["dropout"] == 0.1 and cfg["init_from"]["step"] == 4
    assert cfg["data"].endswith("sonnets.txt")
    # a resumed fine-tuning run continues as any run does
    assert cli("train", "--out", tmp_path / "ft", "--resume", "--max_iters=3", "--quiet")[0] == 0


@pytest.mark.parametrize("extra, match", [
    (["--resume"], "--init_from starts a new run"),
    (["--tokenizer", "bpe"], "drop --preset, --tokenizer and --vocab_size"),
    (["--n_layer=3"], "n_layer cannot change with --init_from"),
    (["--block_size=32"], "block_size 32 is longer than the 16 positions"),
])
def test_init_from_refusals(cli, tmp_path, imported, extra, match):
    data = tmp_path / "text.txt"
    data.write_text(CORPUS, encoding="utf-8")
    code, _, err = cli("train", "--init_from", imported, "--data", data, "--out", tmp_path / "ft", *FLAGS, *extra)
    assert code == 2 and match in err and err.count("\n") == 1
    assert not (tmp_path / "ft").exists()


def test_init_from_refuses_a_missing_source_and_its_own_out(cli, tmp_path, imported):
    data = tmp_path / "text.txt"
    data.write_text(CORPUS, encoding="utf-8")
    code, _, err = cli("train", "--init_from", tmp_path / "nowhere", "--data", data, "--out", tmp_path / "ft", *FLAGS)
    assert code == 2 and "no such run or checkpoint directory" in err
    code, _, err = cli("train", "--init_from", imported, "--data", data, "--out", imported, "--overwrite", *FLAGS)
    assert code == 2 and "is inside --out" in err
    assert json.loads((imported / "config.json").read_text())["imported_from"]
