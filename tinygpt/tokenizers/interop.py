"""Byte-level BPE interop: export to Hugging Face tokenizer.json, tiktoken ranks and GPT-2 files; import GPT-2 files.

Only the JSON/text formats are written here, so exporting needs no extra package; the optional
`tokenizers`, `tiktoken` and `transformers` packages are needed only to use the results.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..files import write_text
from .base import TokenizerError
from .bpe import ByteBPETokenizer, resolve_pattern


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable bytes map to themselves, the rest to U+0100 on.

    Byte-level tokens are stored as strings of these characters (b" the" -> "Ġthe"). The dict order is
    GPT-2's id order for the 256 byte tokens.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def _ordinary_pieces(tok: ByteBPETokenizer, fmt: str) -> list[str]:
    """The byte-level string of every non-special token, by id; refuses vocabularies with duplicate tokens."""
    n = 256 + len(tok.merges)
    if len({tok.id_to_bytes[i] for i in range(n)}) != n:
        raise TokenizerError(f"two merges make the same token; {fmt} needs one id per token string")
    b2u = bytes_to_unicode()
    return ["".join(b2u[b] for b in tok.id_to_bytes[i]) for i in range(n)]


# --- Hugging Face tokenizers ----------------------------------------------------------------------
def to_hf_json(tok: ByteBPETokenizer) -> dict[str, Any]:
    """The tokenizer as a Hugging Face `tokenizer.json` document (a BPE model with byte-level pre-tokenizer)."""
    pieces = _ordinary_pieces(tok, "tokenizer.json")
    if tok.pattern == "gpt2":  # the ByteLevel pre-tokenizer's built-in regex is GPT-2's
        pre_tokenizer: dict[str, Any] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                         "use_regex": True}
    else:
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": resolve_pattern(tok.pattern)}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]}
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in tok.special_ids.items()]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": pre_tokenizer, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            # ignore_merges=False: a chunk that happens to be a whole token is still built by merges, as ours is
            "ignore_merges": False,
            "vocab": {p: i for i, p in enumerate(pieces)},
            "merges": [f"{pieces[a]} {pieces[b]}" for a, b in tok.merges],  # byte-level pieces hold no spaces
        },
    }


def save_hf(tok: ByteBPETokenizer, path: str | os.PathLike) -> None:
    """Write `tokenizer.json` for `tokenizers.Tokenizer.from_file` / `PreTrainedTokenizerFast(tokenizer_file=)`."""
    write_text(Path(path), json.dumps(to_hf_json(tok), ensure_ascii=False, indent=1))


# --- tiktoken -------------------------------------------------------------------------------------
def tiktoken_ranks(tok: ByteBPETokenizer) -> dict[bytes, int]:
    """token bytes -> rank (= our id), tiktoken's `mergeable_ranks`; special tokens are passed separately."""
    _ordinary_pieces(tok, "tiktoken")  # the duplicate check
    return {tok.id_to_bytes[i]: i for i in range(256 + len(tok.merges))}


def save_tiktoken(tok: ByteBPETokenizer, path: str | os.PathLike) -> None:
    """Write a `.tiktoken` file: one `base64(token bytes) rank` line per token, by rank."""
    lines = [f"{base64.b64encode(b).decode('ascii')} {rank}" for b, rank in tiktoken_ranks(tok).items()]
    write_text(Path(path), "\n".join(lines) + "\n")


def load_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a `.tiktoken` file (as tiktoken.load.load_tiktoken_bpe does, without its download cache)."""
    ranks = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def to_tiktoken(tok: ByteBPETokenizer, name: str = "tinygpt") -> Any:
    """A `tiktoken.Encoding` equivalent to tok (needs the optional tiktoken package)."""
    import tiktoken  # optional extra, imported only here

    return tiktoken.Encoding(name=name, pat_str=resolve_pattern(tok.pattern), mergeable_ranks=tiktoken_ranks(tok),
                             special_tokens=dict(tok.special_ids))


# --- GPT-2 vocab.json + merges.txt ------------------------------------------------------------------
def save_gpt2_files(tok: ByteBPETokenizer, folder: str | os.PathLike) -> None:
    """Write `vocab.json` and `merges.txt` in GPT-2's format (special tokens listed in vocab.json)."""
    if tok.pattern != "gpt2":
        raise TokenizerError(f"GPT-2 files imply GPT-2's split pattern; this tokenizer uses {tok.pattern!r}")
    pieces = _ordinary_pieces(tok, "vocab.json")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {**{p: i for i, p in enumerate(pieces)}, **tok.special_ids}
    write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    merges = [f"{pieces[a]} {pieces[b]}" for a, b in tok.merges]
    write_text(folder / "merges.txt", "#version: 0.2\n" + "".join(m + "\n" for m in merges))


def load_gpt2_files(folder: str | os.PathLike) -> ByteBPETokenizer:
    """Read GPT-2-format `vocab.json` + `merges.txt` from a local folder, keeping every id.

    The files must follow GPT-2's layout: ids 0-255 are the 256 bytes (in any order), merge k makes
    id 256 + k, and any further ids are special tokens (GPT-2's `<|endoftext|>` = 50256).
    """
    folder = Path(folder)
    try:
        vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise TokenizerError(f"GPT-2 tokenizer file not found: {e.filename}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"unreadable GPT-2 tokenizer files in {folder}: {e}") from None
    pieces = sorted(vocab, key=vocab.__getitem__)
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise TokenizerError("vocab.json ids are not 0..N-1")
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    if len(pieces) < 256 or any(len(p) != 1 or p not in u2b for p in pieces[:256]):
        raise TokenizerError("vocab.json does not start with the 256 byte tokens (ids 0-255), as GPT-2's does")
    byte_order = [u2b[p] for p in pieces[:256]]
    merges = []
    for line in lines:
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        k = len(merges)
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab:
            raise TokenizerError(f"merges.txt line {line!r} is not two tokens of vocab.json")
        if vocab.get(parts[0] + parts[1]) != 256 + k:
            raise TokenizerError(f"merge {k} ({line!r}) does not make token id {256 + k}, as GPT-2's layout needs")
        merges.append((vocab[parts[0]], vocab[parts[1]]))
    return ByteBPETokenizer(merges, "gpt2", pieces[256 + len(merges):], byte_order)


# --- one entry point for the CLI ---------------------------------------------------------------------
EXPORTERS: dict[str, Callable[[ByteBPETokenizer, Any], None]] = {
    "hf": save_hf, "tiktoken": save_tiktoken, "gpt2": save_gpt2_files,
}


def export(tok: ByteBPETokenizer, fmt: str, out: str | os.PathLike) -> None:
    """Write tok in format fmt ("hf": tokenizer.json, "tiktoken": .tiktoken file, "gpt2": a folder)."""
    if not isinstance(tok, ByteBPETokenizer):
        raise TokenizerError(f"only byte-level BPE tokenizers can be exported, not {type(tok).__name__}")
    if fmt not in EXPORTERS:
        raise TokenizerError(f"unknown export format {fmt!r} (known: {', '.join(EXPORTERS)})")
    EXPORTERS[fmt](tok, out)


__all__ = ["bytes_to_unicode", "to_hf_json", "save_hf", "tiktoken_ranks", "save_tiktoken",
           "load_tiktoken_ranks", "to_tiktoken", "save_gpt2_files", "load_gpt2_files", "export"]
