"""What the Hugging Face formats share: the errors and results of an import or export, the tokenizer files a
folder holds or gets, and the checks every conversion makes (a free output directory, readable JSON, finite
numbers)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinygpt.config import ModelConfig
from tinygpt.generation.generate import end_of_text_id
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, Tokenizer, interop


class HFError(ValueError):
    """A folder that is not a GPT-2 we can import, or a model we cannot export; one line, fit for the CLI."""


@dataclass
class ImportResult:
    out: Path
    config: ModelConfig
    params: int
    weights: list[str]  # the files the weights came from
    tokenizer: str      # the files the tokenizer came from
    format: str = "GPT-2"  # the architecture read: "GPT-2", "Llama" or "Qwen3"


@dataclass
class ExportResult:
    out: Path
    source: Path  # the checkpoint directory exported
    files: list[str]


def read_hf_tokenizer(folder: Path) -> tuple[ByteBPETokenizer, str]:
    """The tokenizer of a GPT-2 folder: tokenizer.json, else vocab.json + merges.txt. Returns it and its files."""
    if (folder / "tokenizer.json").is_file():
        return interop.load_hf(folder / "tokenizer.json"), "tokenizer.json"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return interop.load_gpt2_files(folder), "vocab.json + merges.txt"
    raise HFError(f"{folder} has no tokenizer (expected tokenizer.json, or vocab.json and merges.txt)")


def hf_tokenizer_files(tok: Tokenizer, block_size: int, where: str) -> dict[str, dict[str, Any]]:
    """tokenizer.json and tokenizer_config.json documents for `AutoTokenizer.from_pretrained`, giving our ids."""
    if isinstance(tok, ByteBPETokenizer):
        doc = interop.to_hf_json(tok)
    elif isinstance(tok, CharTokenizer):
        doc = interop.char_to_hf_json(tok)
    else:
        raise HFError(f"{where} has a {tok.kind!r} tokenizer (a task run's word vocabulary): its prompts follow the "
                      f"task's own format, which Hugging Face tools do not know; text runs (char or BPE) export")
    eos = end_of_text_id(tok)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
              "clean_up_tokenization_spaces": False, "add_prefix_space": False}
    if eos is not None:  # GPT-2's <|endoftext|> both starts and ends texts
        config.update(bos_token=tok.id_to_piece(eos), eos_token=tok.id_to_piece(eos))
    return {"tokenizer.json": doc, "tokenizer_config.json": config}


def all_finite(t: torch.Tensor, chunk: int = 1 << 20) -> bool:
    """torch.isfinite(t).all(), a million numbers at a time: on the whole of gpt2-xl's wte its temporaries would
    take more memory than the tensor itself."""
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + chunk]).all()) for i in range(0, flat.numel(), chunk))


def check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise HFError(f"{out} already exists; choose another directory (nothing is overwritten)")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFError(f"{path.parent} has no {path.name} (a Hugging Face GPT-2 folder has config.json, "
                      f"model.safetensors or pytorch_model.bin, and tokenizer.json or vocab.json + merges.txt)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFError(f"{path} is not valid JSON: {e}") from None


__all__ = ["HFError", "ImportResult", "ExportResult", "read_hf_tokenizer", "hf_tokenizer_files", "all_finite", "check_out",
           "read_json"]
