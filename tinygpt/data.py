"""Data: a text file or folder -> token ids -> train/val split -> random blocks for training.

The token stream is a flat numpy array (uint16 when the vocabulary fits, else uint32), the same layout
as a `.bin` file read with `np.memmap`, so corpora larger than RAM can use the same batch code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .tokenizers import Tokenizer

from .models.loss import IGNORE_INDEX  # noqa: F401  (re-exported: targets equal to it do not count in the loss)


class DataError(ValueError):
    """Unusable training data; the message is one line, fit for the CLI."""


def load_text(spec: str | Path) -> tuple[Path, str]:
    """What every command's --data accepts: a UTF-8 text file, a folder of .txt files, or a corpus name
    (see `tinygpt corpora`). Returns (the resolved path, its text)."""
    from .corpora import resolve_data

    path = resolve_data(str(spec))
    return path, read_text(path)


def text_digest(text: str) -> str:
    """A short fingerprint of a text (sha256 of its UTF-8 bytes, 16 hex digits): a run records the one it
    trained on, so a resume on different data is noticed."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """The train/val split rule, used everywhere a text is split: the first (1 - val_fraction) of the
    characters train, the rest validate. split_text("abcdefghij", 0.2) == ("abcdefgh", "ij")."""
    n = int(len(text) * (1 - val_fraction))
    return text[:n], text[n:]


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, or every `.txt` file of a folder (sorted by name, joined by newlines)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"folder {path} holds no .txt files")
        return "\n".join(_read_one(p) for p in files)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    return _read_one(path)


def _read_one(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {path} is empty")
    if b"\x00" in raw[:1 << 20]:
        raise DataError(f"data file {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not valid UTF-8 (bad byte at offset {e.start})") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not text


def to_array(ids: list[int], vocab_size: int) -> np.ndarray:
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    return np.asarray(ids, dtype=dtype)


class BatchSource(Protocol):
    """Anything the training loop can draw (x, y) batches from. y uses IGNORE_INDEX to mask positions."""

    block_size: int

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ...


@dataclass
class TextData:
    """A tokenized text split in two: `train` is the first (1 - val_fraction), `val` the rest.

    Like nanoGPT, the split is made on the text (characters), then each part is encoded.
    `chars` and `bytes` count each split's text so evaluation can report bits per character / byte.
    """

    train: np.ndarray
    val: np.ndarray
    block_size: int
    chars: dict[str, int]
    bytes: dict[str, int]

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, block_size: int, val_fraction: float = 0.1) -> "TextData":
        train, val = split_text(text, val_fraction)
        parts = {"train": train, "val": val}
        arrays = {k: to_array(tokenizer.encode(v), tokenizer.vocab_size) for k, v in parts.items()}
        for k, a in arrays.items():
            if len(a) < block_size + 1:
                raise DataError(
                    f"the {k} split has {len(a)} tokens, fewer than block_size + 1 = {block_size + 1}; "
                    f"give more text or a smaller --block_size")
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
        return block[:, :-1], block[:, 1:]

    def tokens_per_char(self, split: str) -> float:
        return len(self.split(split)) / self.chars[split]

    def tokens_per_byte(self, split: str) -> float:
        return len(self.split(split)) / self.bytes[split]
