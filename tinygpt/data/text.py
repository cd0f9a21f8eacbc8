"""Data: a text file or folder -> token ids -> train/val split -> random blocks for training.

The token stream is a flat numpy array (uint16 when the vocabulary fits, else uint32), the same layout
as a `.bin` file read with `np.memmap`, so corpora larger than RAM use the same batch code: `tinygpt
prepare` (prepare.py) writes such files once, and training reads them mapped, not loaded.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from tinygpt.config import SettingText
from tinygpt.data.corpora import resolve_data
from tinygpt.data.sources import DataError, read_text  # noqa: F401  (re-exported: the data's errors and its whole text)
from tinygpt.models.loss import IGNORE_INDEX  # noqa: F401  (re-exported: targets equal to it do not count in the loss)
from tinygpt.tokenizers import Tokenizer
from tinygpt.tokenizers.base import id_dtype


def load_text(spec: str | Path) -> tuple[Path, str]:
    """What every command's data may be: a UTF-8 text file, a JSONL or Parquet file of records with a "text"
    field, a folder of such files, or a corpus name (see `tinygpt corpora`). Returns (the resolved path, its
    text: the documents joined by newlines, see sources.py)."""
    path = resolve_data(str(spec))
    return path, read_text(path)


def text_digest(text: str) -> str:
    """A short fingerprint of a text (sha256 of its UTF-8 bytes, 16 hex digits): a run records the one it
    trained on, so a resume on different data is noticed."""
    return short_digest(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())


def short_digest(sha256: str) -> str:
    """text_digest from the text's full sha256 (hex), for a text hashed as a stream (prepare.scan)."""
    return sha256[:16]


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """The train/val split rule, used everywhere a text is split: the first (1 - val_fraction) of the
    characters train, the rest validate. split_text("abcdefghij", 0.2) == ("abcdefgh", "ij")."""
    n = split_point(len(text), val_fraction)
    return text[:n], text[n:]


def split_point(n_chars: int, val_fraction: float) -> int:
    """How many of a text's n_chars characters train (split_text's rule, for a text read as a stream)."""
    return int(n_chars * (1 - val_fraction))


def to_array(ids: list[int], vocab_size: int) -> np.ndarray:
    return np.asarray(ids, dtype=id_dtype(vocab_size))


class BatchSource(Protocol):
    """Anything the training loop can draw (x, y) batches from. y uses IGNORE_INDEX to mask positions."""

    block_size: int

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ...


@runtime_checkable
class ScoredSource(Protocol):
    """A BatchSource that also measures a model its own way at each evaluation (chat: exact-match replies)."""

    def metrics(self, model: torch.nn.Module) -> dict[str, float]:
        ...


@dataclass
class TextData:
    """A tokenized text split in two: `train` is the first (1 - val_fraction), `val` the rest.

    Like nanoGPT, the split is made on the text (characters), then each part is encoded.
    `chars` and `bytes` count each split's text so evaluation can report bits per character / byte.
    The arrays may be memory-mapped files: prepared data (prepare.py) is this, read with np.memmap.
    """

    train: np.ndarray
    val: np.ndarray
    block_size: int
    chars: dict[str, int]
    bytes: dict[str, int]
    # For ids read from files (prepared data): every batch is checked against the vocabulary (check_ids), so a
    # damaged file is a one-line DataError naming `origin` and what to do (`remedy`), not an index error deep
    # inside the model.
    vocab_size: int | None = None
    origin: str = ""
    remedy: str = "prepare the data again"

    def __post_init__(self) -> None:
        for k in ("train", "val"):
            n = len(self.split(k))
            if n < self.block_size + 1:
                raise DataError(SettingText(
                    f"the {k} split has {n} tokens, fewer than block_size + 1 = {self.block_size + 1}; "
                    f"give more text or a smaller `block_size`", "block_size"))

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, block_size: int, val_fraction: float = 0.1) -> "TextData":
        train, val = split_text(text, val_fraction)
        parts = {"train": train, "val": val}
        arrays = {k: to_array(tokenizer.encode(v), tokenizer.vocab_size) for k, v in parts.items()}
        return cls(arrays["train"], arrays["val"], block_size,
                   chars={k: len(v) for k, v in parts.items()},
                   bytes={k: len(v.encode("utf-8")) for k, v in parts.items()})

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "val"):
            raise ValueError(f"unknown split {name!r}")
        return self.train if name == "train" else self.val

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random blocks of block_size + 1 ids: x = ids[:-1], y = ids[1:] (int64, on CPU)."""
        data = self.split(split)
        T = self.block_size
        starts = torch.randint(len(data) - T, (batch_size,), generator=generator).numpy()
        block = torch.from_numpy(data[starts[:, None] + np.arange(T + 1)].astype(np.int64))  # (B, T+1)
        self.check_ids(block, split)
        return block[:, :-1], block[:, 1:]

    def check_ids(self, ids: np.ndarray | torch.Tensor, split: str) -> None:
        """For ids read from files: a DataError if any is beyond the vocabulary (the file is damaged)."""
        if self.vocab_size is None or len(ids) == 0:
            return
        top = int(ids.max())
        if top >= self.vocab_size:
            raise DataError(f"{self.origin} is damaged: its {split} split holds token id {top}, beyond the "
                            f"tokenizer's {self.vocab_size:,} tokens; {self.remedy}")

    def tokens_per_char(self, split: str) -> float:
        return len(self.split(split)) / self.chars[split]

    def tokens_per_byte(self, split: str) -> float:
        return len(self.split(split)) / self.bytes[split]


__all__ = ["DataError", "IGNORE_INDEX", "BatchSource", "ScoredSource", "TextData", "load_text", "read_text",
           "short_digest", "split_point", "split_text", "text_digest", "to_array"]
