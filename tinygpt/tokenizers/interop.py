"""Tokenizer interop: byte-level BPE to and from Hugging Face tokenizer.json and GPT-2's vocab.json + merges.txt,
to tiktoken ranks; character vocabularies to tokenizer.json.

Only the JSON/text formats are written here, so exporting needs no extra package; the optional
`tokenizers`, `tiktoken` and `transformers` packages are needed only to use the results.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Callable

from tinygpt.files import write_text
from tinygpt.tokenizers.base import TokenizerError, read_json
from tinygpt.tokenizers.bpe import PATTERNS, ByteBPETokenizer, resolve_pattern
from tinygpt.tokenizers.char import UNK, UNK_TEXT, CharTokenizer


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
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{folder / 'vocab.json'} does not map tokens to ids")
    merges = [line.split(" ") for line in lines if line and not line.startswith("#version")]
    return _from_vocab_merges(vocab, merges, "gpt2", f"{folder / 'vocab.json'} + merges.txt")


def _from_vocab_merges(vocab: dict[str, int], merges: list[list[str]], pattern: str, where: str
                       ) -> ByteBPETokenizer:
    """A byte-level BPE from GPT-2-style byte-character strings: ids 0-255 the bytes, merge k makes 256 + k,
    the ids after the merges special tokens."""
    pieces = sorted(vocab, key=vocab.__getitem__)
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise TokenizerError(f"{where}: vocabulary ids are not 0..N-1")
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    if len(pieces) < 256 or any(len(p) != 1 or p not in u2b for p in pieces[:256]):
        raise TokenizerError(f"{where}: the vocabulary does not start with the 256 byte tokens (ids 0-255), as "
                             f"GPT-2's does")
    byte_order = [u2b[p] for p in pieces[:256]]
    pairs = []
    for k, parts in enumerate(merges):
        shown = " ".join(map(str, parts))
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab:
            raise TokenizerError(f"{where}: merge {shown!r} is not two tokens of the vocabulary")
        if vocab.get(parts[0] + parts[1]) != 256 + k:
            raise TokenizerError(f"{where}: merge {k} ({shown!r}) does not make token id {256 + k}, as GPT-2's "
                                 f"layout needs")
        pairs.append((vocab[parts[0]], vocab[parts[1]]))
    return ByteBPETokenizer(pairs, pattern, pieces[256 + len(pairs):], byte_order)


def from_hf_json(doc: dict[str, Any], where: str = "tokenizer.json") -> ByteBPETokenizer:
    """Read a Hugging Face `tokenizer.json` document holding a byte-level BPE in GPT-2's layout (GPT-2's own,
    or one `to_hf_json` wrote). Anything that would tokenize differently from our BPE is refused."""
    model = doc.get("model") if isinstance(doc, dict) else None
    # tokenizer.json files written by early versions of `tokenizers` may leave the model's type out
    kind = model.get("type", "BPE" if "merges" in model else None) if isinstance(model, dict) else None
    if kind != "BPE":
        raise TokenizerError(f"{where} does not hold a BPE model (only GPT-2-style byte-level BPE is read)")
    if doc.get("normalizer") is not None:
        raise TokenizerError(f"{where} has a normalizer; byte-level BPE as GPT-2's has none")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise TokenizerError(f"{where}: {key} is not part of a byte-level BPE")
    if model.get("ignore_merges") or model.get("byte_fallback") or model.get("dropout"):
        raise TokenizerError(f"{where}: ignore_merges, byte_fallback and dropout are not supported")
    pattern = _hf_pattern(doc.get("pre_tokenizer"), where)
    vocab = dict(model.get("vocab") or {})
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model.get("merges") or []]
    for added in doc.get("added_tokens") or []:  # special tokens may be listed only here
        vocab.setdefault(added["content"], added["id"])
    return _from_vocab_merges(vocab, merges, pattern, where)


def _hf_pattern(pre: Any, where: str) -> str:
    """Our split pattern for a tokenizer.json pre-tokenizer: ByteLevel with its regex is GPT-2's; a Split on a
    regex followed by ByteLevel without one is that regex (to_hf_json writes these two forms)."""
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) \
            and not pre.get("add_prefix_space"):
        return "gpt2"
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    if (isinstance(steps, list) and len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and "Regex" in (steps[0].get("pattern") or {}) and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        regex_ = steps[0]["pattern"]["Regex"]
        return next((name for name, p in PATTERNS.items() if p == regex_), regex_)
    raise TokenizerError(f"{where}: the pre-tokenizer is not GPT-2's byte-level split (found {json.dumps(pre)[:80]})")


def load_hf(path: str | os.PathLike) -> ByteBPETokenizer:
    """Read a Hugging Face `tokenizer.json` file (see from_hf_json)."""
    path = Path(path)
    doc = read_json(path)
    try:
        return from_hf_json(doc, str(path))
    except (KeyError, TypeError, AttributeError) as e:
        raise TokenizerError(f"{path} is malformed: {e!r}") from None


# --- character vocabularies as tokenizer.json --------------------------------------------------------
def char_to_hf_json(tok: CharTokenizer) -> dict[str, Any]:
    """A character tokenizer as a Hugging Face `tokenizer.json` giving the same ids: every character is its own
    piece (a Split on each code point) looked up in a WordLevel vocabulary; unknown characters are <unk>,
    which decodes to U+FFFD as ours does. <unk> is not an added token, so the text "<unk>" is five characters,
    as in ours."""
    vocab = {piece: i for i, piece in enumerate(tok.itos)}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        # [\s\S]: any one code point, newlines included (the Oniguruma regex has no dot-matches-all flag)
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"[\s\S]"}, "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": UNK}, "content": UNK_TEXT},
            {"type": "Fuse"}]},  # pieces join without spaces
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    }


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
           "load_tiktoken_ranks", "to_tiktoken", "save_gpt2_files", "load_gpt2_files", "from_hf_json", "load_hf",
           "char_to_hf_json", "export"]
