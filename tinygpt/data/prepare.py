"""Prepared data: a source tokenized once, in parallel and in bounded memory, into a directory that training
reads memory-mapped (prepared_cache.py prepares large texts for `tinygpt train` by itself).

    DATA_DIR/train.bin  val.bin    the ids of each split, uint16 (or uint32 for vocabularies over 65,536),
                                   as TextData holds them in memory
    DATA_DIR/tokenizer.json        the tokenizer that made them
    DATA_DIR/meta.json             format version, tokenizer, dtype, tokens, characters and bytes per split,
                                   the sha256 of the whole text and of each source file

The split is the project's one rule (data.split_text) on the source's text (sources.py: documents joined by
newlines), so a prepared text holds exactly TextData.from_text's arrays. The text is read as a stream, never
whole: once to check, count and hash it (and to note where each character first occurs: a character
vocabulary needs no other pass), for BPE once more to count the chunks of the training split, and once to
encode it. Pieces of about 4 Mi characters go to worker processes; a piece ends only where the tokenizer
says cutting changes no id (Tokenizer.cut), and at the train/val boundary. A character vocabulary encodes
in this process: faster than a piece travels to a worker and back. A BPE tokenizer learns from chunk counts
added up over the pieces (ByteBPETokenizer.train_from_counts): of the whole training split up to
BPE_SAMPLE_CHARS characters; beyond that, of every k-th piece, spread over the split, about BPE_SAMPLE_CHARS
in all, so that its memory stays bounded. The directory is built beside its destination and renamed into
place when complete (files.atomic_dir): an interrupted preparation leaves no directory that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import signal
import warnings
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

from tinygpt.config import SettingText
from tinygpt.data.conversations import is_chat_file
from tinygpt.data.sources import DataError, TextStream
from tinygpt.data.text import TextData, short_digest, split_point
from tinygpt.files import atomic_dir, write_text
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, Tokenizer, load_tokenizer
from tinygpt.tokenizers.base import id_dtype
from tinygpt.tokenizers.choose import tokenizer_spec

FORMAT = "tinygpt prepared data"
VERSION = 1
META = "meta.json"
SPLITS = ("train", "val")
PIECE_CHARS = 4 << 20  # characters per piece sent to a worker
BPE_SAMPLE_CHARS = 256 << 20  # a BPE tokenizer learns from at most about this much of the training split

Progress = Callable[[str, int, int], None]  # progress(stage, done, total)
TokenizerChoice = Union[str, Tokenizer]  # "char", "bpe", a tokenizer .json file, or a tokenizer object


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- preparing -------------------------------------------------------------------------------------

def scan(path: str | Path, text_field: str = "text", progress: Progress | None = None) -> dict[str, Any]:
    """Read a source once and check all of it: its characters and UTF-8 bytes, the sha256 of its text (the
    fingerprint a run records, equal to data.text_digest of read_text's text) and of each file, and where
    each distinct character first occurs ("first_seen", for a character vocabulary of the training split)."""
    stream = TextStream(path, text_field)
    total = stream.size()
    hashes: dict[Path, dict[str, Any]] = {}
    h, chars, nbytes = hashlib.sha256(), 0, 0
    first_seen: dict[str, int] = {}
    seen_ascii = b""  # the ASCII characters in first_seen, as bytes.translate deletes them
    for block in stream.blocks(hashes):
        data = block.encode("utf-8")
        h.update(data)
        unseen = data.translate(None, seen_ascii)  # usually just the non-ASCII characters, or nothing
        if unseen:
            new = set(unseen.decode("utf-8")) - first_seen.keys()
            first_seen.update((c, chars + at) for c, at in _first_indices(block, new).items())
            seen_ascii += bytes(ord(c) for c in new if c.isascii())
        chars += len(block)
        nbytes += len(data)
        if progress:
            progress("reading", min(nbytes, total), total)
    if progress:
        progress("reading", total, total)
    return {"path": str(Path(path).resolve()), "text_field": text_field, "chars": chars, "bytes": nbytes,
            "text_sha256": h.hexdigest(), "sources": [hashes[f] for f in stream.files], "first_seen": first_seen}


def tokenizer_choice(tokenizer: TokenizerChoice, vocab_size: int | None) -> tuple[TokenizerChoice, int | None]:
    """The tokenizer asked for and its vocab_size, checked: ("char", None), ("bpe", its size), or a Tokenizer (given,
    or loaded from the .json file named)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer, vocab_size
    kind, vocab_size = tokenizer_spec(tokenizer, vocab_size)
    return (load_tokenizer(tokenizer) if kind == "file" else kind), vocab_size


def _first_indices(text: str, chars: set[str]) -> dict[str, int]:
    """Where each of `chars` first occurs in `text`: a search per character when they are few, else one sort
    of all the text's code points (a text of thousands of distinct characters, such as Chinese)."""
    if len(chars) <= 256:
        return {c: text.find(c) for c in chars}
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    found, first = np.unique(codes, return_index=True)
    return {c: at for c, at in zip(map(chr, found.tolist()), first.tolist()) if c in chars}


def prepare(path: str | Path, out: str | Path, tokenizer: TokenizerChoice = "char", vocab_size: int | None = None,
            *, text_field: str = "text", val_fraction: float = 0.1, workers: int | None = None,
            progress: Progress | None = None, scanned: dict[str, Any] | None = None,
            piece_chars: int = PIECE_CHARS) -> dict[str, Any]:
    """Tokenize the source at `path` into the new directory `out` (see the module docstring); returns its meta.

    tokenizer: "char" (built from the training split), "bpe" (trained on it, vocab_size tokens, 4096 by
    default), the path of a tokenizer .json file, or a Tokenizer. workers: processes (default: one per core;
    1 works in this process). scanned: scan()'s result when the caller already has it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if text_field == "text" and is_chat_file(path):  # not text to tokenize once, but conversations to pack
        raise DataError(SettingText(f"{path} holds conversations (a \"messages\" list per line), which are not "
                                    f"prepared: training reads them as they are (`data` {path}), packs whole "
                                    f"conversations into its window and learns the assistant's replies", "data"))
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise DataError(SettingText(f"{out} already exists; give `out` a new directory", "out"))
    tokenizer, vocab_size = tokenizer_choice(tokenizer, vocab_size)
    workers = workers or default_workers()
    info = scanned or scan(path, text_field, progress)
    stream = TextStream(path, text_field)
    n_train = split_point(info["chars"], val_fraction)
    tok, how = _tokenizer(tokenizer, vocab_size, stream, n_train, workers, progress, piece_chars, info)
    if isinstance(tok, CharTokenizer):
        workers = 1  # it encodes a piece faster than the piece travels to another process and back
    dtype = id_dtype(tok.vocab_size)
    tokens, chars, nbytes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    with atomic_dir(out) as tmp:
        files = {k: open(tmp / f"{k}.bin", "wb") for k in SPLITS}
        try:
            pieces = _pieces(stream.blocks(), n_train, piece_chars, tok.cut)
            unknown, unseen = 0, set()  # <unk> in the training split: only a tokenizer from elsewhere makes any
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # validation characters unseen in training are expected
                for split, piece, (ids, n_bytes) in _in_order(pieces, _encode, workers, tok):
                    if split == "train" and isinstance(tok, CharTokenizer):
                        n = int(np.count_nonzero(ids == tok.unk_id))
                        if n:
                            unknown, unseen = unknown + n, unseen | set(tok.unseen(piece))
                    files[split].write(memoryview(np.ascontiguousarray(ids, dtype=dtype)))
                    tokens[split] += len(ids)
                    chars[split] += len(piece)
                    nbytes[split] += n_bytes
                    if progress:
                        progress("encoding", chars["train"] + chars["val"], info["chars"])
        finally:
            for f in files.values():
                f.close()
        if chars["train"] + chars["val"] != info["chars"]:
            raise DataError(f"{path} changed while it was being prepared; prepare it again")
        tok.save(tmp / "tokenizer.json")
        meta = {"format": FORMAT, "version": VERSION,
                "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "how": how},
                "dtype": dtype.name, "val_fraction": val_fraction,
                "tokens": tokens, "chars": chars, "bytes": nbytes,
                "text": {"path": info["path"], "text_field": info["text_field"], "chars": info["chars"],
                         "bytes": info["bytes"], "sha256": info["text_sha256"]},
                "sources": info["sources"]}
        if unknown:
            meta["unknown"] = {"train_tokens": unknown, "chars": "".join(sorted(unseen))}
        write_text(tmp / META, json.dumps(meta, indent=1, ensure_ascii=False))  # last: the mark of completeness
    return meta


def unknown_note(meta: dict[str, Any]) -> str | None:
    """What a prepared directory's meta says of training characters missing from its tokenizer, or None."""
    u = meta.get("unknown")
    return unknown_message(u["train_tokens"], u["chars"]) if u else None


def unknown_message(count: int, chars: str) -> str:
    """The warning for `count` characters of a training text that its (given) tokenizer maps to <unk>."""
    shown = chars[:10] + ("..." if len(chars) > 10 else "")
    return (f"{count:,} characters of the training text are not in the tokenizer's vocabulary and map to <unk>: "
            f"{shown!r}")


def _tokenizer(choice: TokenizerChoice, vocab_size: int | None, stream: TextStream, n_train: int, workers: int,
               progress: Progress | None, piece_chars: int, info: dict[str, Any]) -> tuple[Tokenizer, str]:
    """The tokenizer given, or one built from the training split (the first n_train characters)."""
    if isinstance(choice, Tokenizer):
        return choice, f"given ({choice.kind}, {choice.vocab_size:,} tokens)"
    if choice == "char":  # the characters that occur in the training split: those first seen before its end
        chars = sorted(c for c, at in info["first_seen"].items() if at < n_train)
        return CharTokenizer(chars), "built a character vocabulary from the training split"
    assert choice == "bpe" and vocab_size is not None
    counter = ByteBPETokenizer()  # no merges: it only cuts and counts chunks
    every = max(1, math.ceil(n_train / BPE_SAMPLE_CHARS))
    sample = (p for i, p in enumerate(_train_pieces(stream, n_train, piece_chars, counter.cut)) if i % every == 0)
    counts: Counter[str] = Counter()
    sampled = 0
    for _, piece, piece_counts in _in_order(sample, _count, workers, counter):
        counts.update(piece_counts)
        sampled += len(piece)
        if progress:
            progress("counting", sampled, min(n_train, BPE_SAMPLE_CHARS) if every > 1 else n_train)
    bar = (lambda done, total: progress("merges", done, total)) if progress else None
    tok = ByteBPETokenizer.train_from_counts(counts, vocab_size, progress=bar)
    where = "the training split" if every == 1 else \
        f"a sample of the training split (one piece in {every}: {sampled:,} of its {n_train:,} characters)"
    return tok, f"trained a BPE tokenizer ({tok.vocab_size} tokens) on {where}"


def _train_pieces(stream: TextStream, n_train: int, piece_chars: int, cut: Callable[[str, int], int | None]
                  ) -> Iterator[tuple[str, str]]:
    for split, piece in _pieces(stream.blocks(), n_train, piece_chars, cut):
        if split != "train":
            return
        yield split, piece


def _pieces(blocks: Iterable[str], n_train: int, size: int, cut: Callable[[str, int], int | None]
            ) -> Iterator[tuple[str, str]]:
    """(split, piece) in order: the text cut at n_train characters (train | val) and, within each split, into
    pieces of about `size` characters where cut(text, near) allows; where it allows none, a piece grows."""
    split, parts, n, stuck = "train", [], 0, False
    for part_split, text in _by_split(blocks, n_train):
        if part_split != split:
            if parts:
                yield split, "".join(parts)
            split, parts, n, stuck = part_split, [], 0, False
        if stuck:  # no place to cut in what is held: look in the new text only (and at the character before it)
            q = cut(parts[-1][-1] + text, 1)
            parts.append(text)
            n += len(text)
            if q is None:
                continue
            buf, p = "".join(parts), n - len(text) - 1 + q
            yield split, buf[:p]
            parts, n, stuck = [buf[p:]], len(buf) - p, False
        else:
            parts.append(text)
            n += len(text)
        while n >= size:
            buf = "".join(parts) if len(parts) > 1 else parts[0]
            p = cut(buf, size)
            if p is None:
                parts, stuck = [buf], True
                break
            yield split, buf[:p]
            parts, n = [buf[p:]], len(buf) - p
    if parts:
        yield split, "".join(parts)


def _by_split(blocks: Iterable[str], n_train: int) -> Iterator[tuple[str, str]]:
    """The blocks, the one that straddles character n_train cut in two, each tagged with its split."""
    pos = 0
    for block in blocks:
        end = pos + len(block)
        if pos < n_train < end:
            yield "train", block[:n_train - pos]
            yield "val", block[n_train - pos:]
        elif block:
            yield ("train" if end <= n_train else "val"), block
        pos = end


# --- the workers -----------------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _start_worker(tokenizer: Tokenizer | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    warnings.simplefilter("ignore")
    _worker["tok"] = tokenizer


def _count(piece: str) -> Counter[str]:
    return _worker["tok"].chunk_counts(piece)


def _encode(piece: str) -> tuple[np.ndarray, int]:
    return _worker["tok"].encode_array(piece), len(piece.encode("utf-8"))


def _in_order(pieces: Iterable[tuple[str, str]], job: Callable[[str], Any], workers: int,
              tokenizer: Tokenizer | None) -> Iterator[tuple[str, str, Any]]:
    """(split, piece, job(piece)) for each piece, in order, computed by `workers` processes (forked, each with
    its own copy of the tokenizer) with at most two pieces per worker in flight; workers=1: in this process."""
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        _worker["tok"] = tokenizer
        for split, piece in pieces:
            yield split, piece, job(piece)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)  # the workers use no threads
        pool = multiprocessing.get_context("fork").Pool(workers, _start_worker, (tokenizer,))
    with pool:
        pending: deque = deque()
        for split, piece in pieces:
            pending.append((split, piece, pool.apply_async(job, (piece,))))
            if len(pending) >= 2 * workers:
                split0, piece0, result = pending.popleft()
                yield split0, piece0, result.get()
        while pending:
            split0, piece0, result = pending.popleft()
            yield split0, piece0, result.get()


# --- reading ---------------------------------------------------------------------------------------

def is_prepared(path: str | Path) -> bool:
    """Is `path` a prepared data directory (one with a meta.json)?"""
    return (Path(path) / META).is_file()


def read_meta(path: str | Path) -> dict[str, Any]:
    """A prepared directory's meta.json, checked: one-line DataErrors for a damaged or newer one."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is not prepared data (no {META}); make it with tinygpt prepare") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"prepared data {path}: {META} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path / META} does not describe prepared data")
    if meta.get("version", 0) > VERSION:
        raise DataError(f"prepared data {path} has format version {meta['version']}, newer than this tinygpt "
                        f"reads ({VERSION})")
    return meta


def open_prepared(path: str | Path, block_size: int) -> TextData:
    """The data of a prepared directory, memory-mapped (nothing is read until a batch needs it); the files are
    checked against meta.json first, so a damaged directory is a one-line DataError, not garbage ids."""
    path = Path(path)
    meta = read_meta(path)
    dtype = np.dtype(meta["dtype"])
    arrays = {}
    for split in SPLITS:
        f = path / f"{split}.bin"
        expected = meta["tokens"][split] * dtype.itemsize
        size = f.stat().st_size if f.is_file() else None
        if size != expected:
            raise DataError(f"prepared data {path} is damaged: {f.name} has {size} bytes, {META} says {expected}")
        arrays[split] = np.memmap(f, dtype=dtype, mode="r") if expected else np.zeros(0, dtype)
    return TextData(arrays["train"], arrays["val"], block_size, chars=meta["chars"], bytes=meta["bytes"],
                    vocab_size=meta["tokenizer"]["vocab_size"], origin=f"prepared data {path}")


def prepared_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer that made a prepared directory's ids."""
    path = Path(path)
    tok = load_tokenizer(path / "tokenizer.json")
    if tok.vocab_size != read_meta(path)["tokenizer"]["vocab_size"]:
        raise DataError(f"prepared data {path} is damaged: its tokenizer.json does not match {META}")
    return tok


def fingerprint(meta: dict[str, Any]) -> str:
    """The data fingerprint a run records (data.text_digest of the same text, read in memory)."""
    return short_digest(meta["text"]["sha256"])


__all__ = ["BPE_SAMPLE_CHARS", "fingerprint", "is_prepared", "open_prepared", "prepare", "prepared_tokenizer",
           "read_meta", "scan", "tokenizer_choice", "unknown_message", "unknown_note"]
