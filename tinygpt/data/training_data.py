"""The data a training run reads, ready, from what its `data` setting names, in one call: a text read into
memory, a prepared directory, a large text prepared once into the cache (prepared_cache.py), or a file of
conversations; with the tokenizer it is read with and the fingerprint the run records.

A new run names the tokenizer it wants ("char", "bpe", a tokenizer .json file): it is built from the training
split only, so validation stays unseen, or it comes with prepared data. A resumed run, or one starting from
other weights, brings its tokenizer, and prepared data must have been made with it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinygpt.config import ConfigError, SettingText
from tinygpt.data.conversations import Conversation, read_conversations, split_conversations
from tinygpt.data.prepare import Progress, fingerprint, unknown_message, unknown_note
from tinygpt.data.prepared_cache import Prepared, check_fingerprint, prepared_for_run
from tinygpt.data.text import TextData, load_text, split_text, text_digest
from tinygpt.tokenizers import CharTokenizer, ChatTokenizer, Tokenizer
from tinygpt.tokenizers.choose import tokenizer_for_training


@dataclass
class TrainingData:
    """What a run trains on: text ids ready to draw batches from (`source`), or conversations (`conversations`,
    which the chat task packs into blocks), and the facts a run records about them."""

    path: Path  # what `data` named, found: a text file or folder, a prepared directory, a .jsonl file
    fingerprint: str  # of its text: a run records it, and a resumed run is compared with it
    tokenizer: Tokenizer
    val_fraction: float  # the split it is read with (fixed once the data is prepared)
    source: TextData | None = None  # text: its ids, in memory or memory-mapped
    conversations: tuple[list[Conversation], list[Conversation]] | None = None  # chat: training and held out
    prepared_dir: Path | None = None  # the cache entry read, when it is not what `data` named
    notes: list[str] = field(default_factory=list)  # what was decided on reading (the tokenizer, lines left out)
    source_notes: list[str] = field(default_factory=list)  # what the ids say (unknown characters, the copy read)


def training_data(spec: str | Path, tokenizer: Tokenizer | str | None, *, block_size: int, val_fraction: float,
                  split_asked: bool = False, vocab_size: int | None = None, chat: bool = False,
                  skip_bad_lines: bool = False, expect: str | None = None, tokenizer_cache: Path | None = None,
                  progress: Progress | None = None) -> TrainingData:
    """The data `spec` names (a text file or folder, a JSONL or Parquet file, a corpus name, a prepared directory,
    or with chat=True a .jsonl file of conversations), read with `tokenizer` into blocks of block_size tokens.

    tokenizer: a Tokenizer (a resumed run's, or the one of the weights a run starts from), or what a new run asks
    for: "char" (None: char, unless prepared data brings its own), "bpe" (vocab_size tokens, cached in
    tokenizer_cache), or a tokenizer .json file. A new chat run's tokenizer gets the chat template's tokens; a
    given one is returned as it is.
    A source of prepared_cache.AUTO_PREPARE_BYTES or more is prepared into the cache first (once;
    progress(stage, done, total) follows it). Prepared data keeps the split it was made with: another
    val_fraction is refused when the caller asked for one (split_asked).
    expect: the fingerprint the text must have (a resumed run's); another text raises NotTheExpectedText before
    anything is prepared or encoded. skip_bad_lines leaves malformed conversations out instead of refusing them.
    """
    if skip_bad_lines and not chat:
        raise ConfigError(SettingText("`skip_bad_lines` applies to chat data (a .jsonl file of conversations)",
                                      "skip_bad_lines"))
    if chat:
        return _conversations(Path(spec), tokenizer, vocab_size, val_fraction, skip_bad_lines, expect,
                              tokenizer_cache)
    prepared = prepared_for_run(spec, tokenizer, vocab_size, val_fraction, progress, expect=expect)
    if prepared is not None:
        return _prepared(prepared, tokenizer, block_size, val_fraction if split_asked else None)
    return _text(spec, tokenizer, vocab_size, block_size, val_fraction, expect, tokenizer_cache)


def _text(spec: str | Path, tokenizer: Tokenizer | str | None, vocab_size: int | None, block_size: int,
          val_fraction: float, expect: str | None, tokenizer_cache: Path | None) -> TrainingData:
    """A text read into memory and encoded whole."""
    path, text = load_text(spec)
    digest = text_digest(text)
    check_fingerprint(path, digest, expect)
    tok, notes = _tokenizer(tokenizer, split_text(text, val_fraction)[0], vocab_size, tokenizer_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # validation characters unseen in training are expected
        source = TextData.from_text(text, tok, block_size, val_fraction)
    unknown = _unknown_in_training(tok, source, text, val_fraction)
    return TrainingData(path, digest, tok, val_fraction, source=source, notes=notes,
                        source_notes=[f"warning: {unknown}"] if unknown else [])


def _prepared(prepared: Prepared, tokenizer: Tokenizer | str | None, block_size: int,
              asked: float | None) -> TrainingData:
    """Prepared data: its split is the one it was made with, so another one asked for is refused."""
    fixed = prepared.meta["val_fraction"]
    if asked is not None and asked != fixed:
        raise ConfigError(f"{prepared.dir} was prepared with val_fraction {fixed}; prepare it again for another split")
    given = isinstance(tokenizer, Tokenizer)
    data = TrainingData(prepared.data, fingerprint(prepared.meta), tokenizer if given else prepared.tokenizer,
                        fixed, source=prepared.source(block_size),
                        prepared_dir=prepared.dir if prepared.dir != prepared.data else None)
    if not given:
        data.notes.append(f"tokenizer: the prepared data's ({prepared.meta['tokenizer']['how']})")
    unknown = unknown_note(prepared.meta)
    if unknown:
        data.source_notes.append(f"warning: {unknown}")
    data.source_notes.append(prepared.note)
    return data


def _conversations(path: Path, tokenizer: Tokenizer | str | None, vocab_size: int | None, val_fraction: float,
                   skip_bad_lines: bool, expect: str | None, tokenizer_cache: Path | None) -> TrainingData:
    """A .jsonl file of conversations, split; a new run's tokenizer learns from the words of the training ones."""
    conversations, skipped = read_conversations(path, skip_bad_lines)
    digest = text_digest(path.read_text(encoding="utf-8"))
    check_fingerprint(path, digest, expect)
    train, val = split_conversations(conversations, val_fraction)
    notes = [f"left out {len(skipped)} malformed line(s) of {path}; the first: {skipped[0]}"] if skipped else []
    words = "\n".join(m.content for c in train for m in c.messages)
    tok, how = _tokenizer(tokenizer, words, vocab_size, tokenizer_cache)
    if how and not isinstance(tok, ChatTokenizer):
        tok, how = ChatTokenizer(tok), [how[0] + ", plus the chat template's tokens"]
    return TrainingData(path, digest, tok, val_fraction, conversations=(train, val), notes=notes + how)


def _tokenizer(tokenizer: Tokenizer | str | None, train_text: str, vocab_size: int | None,
               cache: Path | None) -> tuple[Tokenizer, list[str]]:
    """(the tokenizer, a note on where it came from): a given one as it is (no note), else the one asked for,
    built from the training split `train_text`."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer, []
    tok, how = tokenizer_for_training(tokenizer or "char", train_text, vocab_size, cache)
    return tok, [f"tokenizer: {how}"]


def _unknown_in_training(tok: Tokenizer, data: TextData, text: str, val_fraction: float) -> str | None:
    """A warning when characters of the training split of a text read in memory are not in a character
    tokenizer's vocabulary (a given tokenizer, or a resumed run's on other data): they train as <unk>.
    (prepare() counts them for prepared data.)"""
    if not isinstance(tok, CharTokenizer):
        return None
    count = int(np.count_nonzero(data.split("train") == tok.unk_id))
    return unknown_message(count, tok.unseen(split_text(text, val_fraction)[0])) if count else None


__all__ = ["TrainingData", "training_data"]
