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


# --- chat from a base with a short window ------------------------------------------------------------

def _conversations(path, *convs):
    path.write_text("".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in conv]}) + "\n"
                            for conv in convs), encoding="utf-8")
    return path


SHORT = [("user", "hi"), ("assistant", "hello")]  # 4 + 7 tokens with the template's
TWO_EXCHANGES = [("user", "what is up"), ("assistant", "the sky"), ("user", "and then"), ("assistant", "more sky")]
NO_EXCHANGE_FITS = [("user", "a" * 40), ("assistant", "b")]


@pytest.fixture
def short_base(tmp_path, play, capsys):
    """A character run with a 32-token window, as the tour's Shakespeare run has 64."""
    text = tmp_path / "plays.txt"
    text.write_text(play[:5000], encoding="utf-8")
    from tinygpt.cli.main import main
    assert main(["train", "--data", str(text), "--out", str(tmp_path / "base"), *TINY_FLAGS, "--max_iters=1"]) == 0
    capsys.readouterr()  # its output is not the test's
    return tmp_path / "base"


def test_chat_from_a_short_window_base_cuts_long_conversations_at_a_turn(cli, tmp_path, short_base):
    """The conversations longer than the base's window no longer stop the run: each is cut after its last
    complete exchange that fits, one that not even its first exchange fits is left out, both are counted, and
    the note names a window that would hold them whole without asking the base for positions it lacks."""
    from tinygpt.training.plan import plan_init_from
    convs = _conversations(tmp_path / "convs.jsonl", *[SHORT] * 3, TWO_EXCHANGES, *[SHORT] * 3, NO_EXCHANGE_FITS,
                           *[SHORT] * 2)
    plan = plan_init_from(short_base, convs, {}, out=tmp_path / "chat")
    train = plan.source.conversations["train"]
    assert len(train) == 8 and len(plan.source.conversations["val"]) == 1  # 10 read, 1 left out
    cut = [c for c in train if c.line == 4]
    assert [(m.role, m.content) for m in cut[0].messages] == TWO_EXCHANGES[:2]  # the exchange that fits, whole
    assert all(c.line != 8 for c in train)
    assert plan.meta["chat"] == {"loss_on": "assistant", "long_conversations": "cut"}
    # the command line: the run trains, and its note counts them and names what works
    code, _, err = cli("train", "--init_from", short_base, "--data", convs, "--out", tmp_path / "chat", *FLAGS)
    assert code == 0, err
    note = next(line for line in err.splitlines() if "do not fit" in line)
    assert "2 of 10 conversations do not fit the model's window (--block_size 32: 33 tokens at most" in note
    assert "the longest, on line 8, is 45" in note
    assert "cut 1 after their last exchange that fits, and left out 1 in which not even the first exchange" in note
    assert f"the model in {(short_base / 'best').resolve()} reads at most 32 tokens" in note
    assert "start from a base model trained with --block_size 44 or more" in note
    assert Run(tmp_path / "chat").config("latest")["chat"]["long_conversations"] == "cut"
    code, out, err = cli("eval", tmp_path / "chat", "--split=all", "--device=cpu")  # evaluated as it was trained
    assert code == 0 and "all: 9 conversations" in out, err


def test_long_conversations_skip_and_refuse(cli, tmp_path, short_base):
    convs = _conversations(tmp_path / "convs.jsonl", *[SHORT] * 3, TWO_EXCHANGES, *[SHORT] * 5)
    code, _, err = cli("train", "--init_from", short_base, "--data", convs, "--out", tmp_path / "skip", *FLAGS,
                       "--long_conversations", "skip")
    assert code == 0, err
    assert "1 of 9 conversations do not fit" in err and ": left out 1;" in err
    code, _, err = cli("train", "--init_from", short_base, "--data", convs, "--out", tmp_path / "refuse", *FLAGS,
                       "--long_conversations", "refuse")
    assert code == 2 and err.count("\n") == 1, err
    assert "(--long_conversations cut) or leave them out (--long_conversations skip)" in err
    assert "--block_size 40" not in err.replace("trained with --block_size 40", "")  # never asked of this base
    assert not (tmp_path / "refuse").exists()
    # a cropped window: the message names the window the base does have
    code, _, err = cli("train", "--init_from", short_base, "--data", convs, "--out", tmp_path / "r2", *FLAGS,
                       "--long_conversations", "refuse", "--block_size=24")
    assert code == 2 and "to train them whole, use --block_size 40" not in err
    assert "1 of 9" in err


def test_a_longer_window_than_the_base_has_names_what_works(cli, tmp_path, short_base):
    convs = _conversations(tmp_path / "convs.jsonl", *[SHORT] * 9, TWO_EXCHANGES)
    code, _, err = cli("train", "--init_from", short_base, "--data", convs, "--out", tmp_path / "c", *FLAGS,
                       "--block_size=64")
    assert code == 2 and err.count("\n") == 1, err
    assert "reads at most 32 tokens; give --block_size 32 or less" in err
