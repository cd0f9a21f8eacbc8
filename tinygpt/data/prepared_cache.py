"""Prepared data for training runs: a prepared directory named as a run's data, or a large text prepared once into
the cache (cache_dir("prepared")) and found there again at the next start without reading the text.

Entries are keyed by the sha256 of the text, the tokenizer and val_fraction; an index keyed by each source
file's path, size, modification time and first and last 64 KiB, and by the tokenizer asked for, finds an
entry without hashing the text. Nothing else checks that a file is unchanged: delete the cache folder (or
the entry) to prepare again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinygpt.cache import cache_dir
from tinygpt.config import ConfigError, SettingText
from tinygpt.data.corpora import resolve_data
from tinygpt.data.prepare import (VERSION, Progress, TokenizerChoice, fingerprint, is_prepared, open_prepared, prepare,
                                  prepared_tokenizer, read_meta, scan, tokenizer_choice)
from tinygpt.data.sources import DataError, TextStream
from tinygpt.data.text import TextData, short_digest
from tinygpt.files import write_text
from tinygpt.tokenizers import Tokenizer

AUTO_PREPARE_BYTES = 16 << 20  # `tinygpt train --data` prepares (and caches) sources of this size and more


@dataclass
class Prepared:
    """Prepared data a run trains on: the directory, its tokenizer and meta, and what the run's data named."""

    dir: Path
    tokenizer: Tokenizer
    meta: dict[str, Any]
    data: Path  # the prepared directory itself, or the text that was prepared into the cache
    note: str  # which directory the run reads, for the run's notes

    def source(self, block_size: int) -> TextData:
        remedy = None if self.dir == self.data else f"delete {self.dir} and the next start prepares {self.data} again"
        try:
            data = open_prepared(self.dir, block_size)
        except DataError as e:
            if remedy is None:
                raise
            raise DataError(e.args[0] + f" (a copy in the cache: {remedy})") from None  # keeps the settings it names
        if remedy is not None:  # a damaged id found later says the same
            data.remedy = remedy
        return data


class NotTheExpectedText(DataError):
    """The source is not the text a resumed run was trained on (found before anything is prepared from it)."""


def prepared_for_run(spec: str | Path, tokenizer: TokenizerChoice | None, vocab_size: int | None,
                     val_fraction: float, progress: Progress | None = None, *,
                     expect: str | None = None) -> Prepared | None:
    """What `tinygpt train --data spec` reads when that is prepared data: a prepared directory, or a source of
    AUTO_PREPARE_BYTES or more, prepared into cache_dir("prepared") (or found there). None for a smaller
    source, which a run reads into memory.

    tokenizer: for a new run, the tokenizer asked for (None: char); for a resumed run or one started from
    other weights, the run's Tokenizer, which a prepared directory must have been made with.
    expect: the fingerprint (prepare.fingerprint) the source's text must have; another text raises
    NotTheExpectedText before it is prepared.
    """
    path = resolve_data(str(spec))
    if is_prepared(path):
        if isinstance(tokenizer, str) or vocab_size is not None:
            raise ConfigError(SettingText(f"{path} is prepared data: it brings its own tokenizer; drop `tokenizer` / "
                                          f"`vocab_size`", "tokenizer", "vocab_size"))
        tok = prepared_tokenizer(path)
        if isinstance(tokenizer, Tokenizer) and tok != tokenizer:
            raise DataError(SettingText(f"{path} was prepared with another tokenizer than the model's ({tok!r}, not "
                                        f"{tokenizer!r}); prepare the text again with `tokenizer` set to the run's "
                                        f"tokenizer.json", "tokenizer"))
        return Prepared(path, tok, read_meta(path), path, f"data: the prepared directory {path}")
    if not wants_preparing(path):
        return None
    entry, reused = prepare_cached(path, cache_dir("prepared"), tokenizer or "char", vocab_size,
                                   val_fraction=val_fraction, progress=progress, expect=expect)
    how = "found in the cache" if reused else "made now, and cached"
    return Prepared(entry, prepared_tokenizer(entry), read_meta(entry), path,
                    f"data: {path}, read from its prepared copy {entry} ({how})")


# --- the cache -------------------------------------------------------------------------------------

def wants_preparing(path: str | Path) -> bool:
    """Does `tinygpt train --data path` prepare the source (AUTO_PREPARE_BYTES of files or more)?"""
    return TextStream(path).size() >= AUTO_PREPARE_BYTES


def prepare_cached(path: str | Path, cache: Path, tokenizer: TokenizerChoice = "char", vocab_size: int | None = None,
                   *, val_fraction: float = 0.1, workers: int | None = None,
                   progress: Progress | None = None, expect: str | None = None) -> tuple[Path, bool]:
    """The prepared directory of the source at `path` with this tokenizer and split, from `cache` or made
    there now. Returns (the directory, whether it was already there).

    Entries are keyed by the text's sha256, the tokenizer and val_fraction. Finding one does not read the
    text again: an index keyed by each file's path, size, modification time and first and last 64 KiB, and
    by the tokenizer asked for ("char", "bpe" and a size, or the tokenizer itself), points to it. An entry is
    also indexed by the tokenizer it made, by file and by content, so a run resumed with the tokenizer it saved
    finds the entry its start made, even after the file was touched or copied elsewhere. With `expect` (a
    fingerprint), another text raises NotTheExpectedText before anything is prepared.
    """
    tokenizer, vocab_size = tokenizer_choice(tokenizer, vocab_size)
    settings = {"tokenizer": _tokenizer_key(tokenizer, vocab_size), "val_fraction": val_fraction, "version": VERSION}
    stamps = _file_stamps(path)
    index = cache / "index" / f"{_digest({**settings, 'files': stamps})}.json"
    entry = _indexed(cache, index)
    if entry is not None:
        check_fingerprint(path, fingerprint(read_meta(entry)), expect)
        return entry, True
    info = scan(path, progress=progress)  # not indexed yet (or changed on disk): look by content
    check_fingerprint(path, short_digest(info["text_sha256"]), expect)
    by_content = _digest({**settings, "text_sha256": info["text_sha256"]})
    # an entry made by another request that produced this very tokenizer (a run made from the text with
    # "char", resumed with the tokenizer it saved) is indexed under that tokenizer and the content
    entry = _indexed(cache, cache / "index" / f"{by_content}.json") or cache / by_content
    reused = is_prepared(entry)
    if not reused:
        if entry.exists():
            shutil.rmtree(entry)  # an incomplete entry (its meta.json gone): ours to replace
        try:
            prepare(path, entry, tokenizer, vocab_size, val_fraction=val_fraction, workers=workers,
                    progress=progress, scanned=info)
        except OSError:
            if not is_prepared(entry):  # else another process prepared the same entry meanwhile
                raise
    record = json.dumps({"entry": entry.name, "source": info["path"]})
    write_text(index, record)
    made_with = {**settings, "tokenizer": _tokenizer_key(prepared_tokenizer(entry), None)}
    for key in ({**made_with, "files": stamps}, {**made_with, "text_sha256": info["text_sha256"]}):
        write_text(cache / "index" / f"{_digest(key)}.json", record)  # found again by the tokenizer it made
    return entry, reused


def check_fingerprint(path: str | Path, found: str, expect: str | None) -> None:
    """NotTheExpectedText when a fingerprint is expected (a resumed run's) and the source's text has another."""
    if expect is not None and found != expect:
        raise NotTheExpectedText(f"{path}: its text has fingerprint {found}, not {expect}")


def _indexed(cache: Path, index: Path) -> Path | None:
    """The prepared entry the index file `index` points to, or None (no such file, a damaged one, or an entry
    that is gone or incomplete)."""
    try:
        entry = cache / json.loads(index.read_text(encoding="utf-8"))["entry"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if is_prepared(entry) else None


def _tokenizer_key(tokenizer: TokenizerChoice, vocab_size: int | None) -> str:
    if isinstance(tokenizer, Tokenizer):
        return "tokenizer " + _digest({"type": tokenizer.kind, **tokenizer.to_dict()})
    return f"{tokenizer} {vocab_size}"


def _file_stamps(path: str | Path) -> list[list[Any]]:
    stamps = []
    for f in TextStream(path).files:
        st = f.stat()
        with open(f, "rb") as fh:
            edges = hashlib.sha256(fh.read(1 << 16))
            fh.seek(max(0, st.st_size - (1 << 16)))
            edges.update(fh.read())
        stamps.append([str(f.resolve()), st.st_size, st.st_mtime_ns, edges.hexdigest()])
    return stamps


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:24]


__all__ = ["AUTO_PREPARE_BYTES", "NotTheExpectedText", "Prepared", "check_fingerprint", "prepare_cached",
           "prepared_for_run", "wants_preparing"]
