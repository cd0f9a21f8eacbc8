"""Character-level tokenizer: one id per distinct character of the training text, plus specials."""
from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np

from tinygpt.tokenizers.base import Tokenizer, TokenizerError, id_dtype, register

UNK = "<unk>"
UNK_TEXT = "\N{REPLACEMENT CHARACTER}"  # what <unk> decodes to


@register
class CharTokenizer(Tokenizer):
    """Vocabulary = special tokens, then the sorted unique characters of the training text.

    >>> tok = CharTokenizer.train("hello")
    >>> tok.encode("hole"), tok.decode(tok.encode("hole"))
    ([2, 4, 3, 1], 'hole')

    Characters never seen in training map to `<unk>` (id 0) with one warning per tokenizer;
    `<unk>` decodes to U+FFFD, the Unicode replacement character.
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], specials: Iterable[str] = (UNK,)):
        self.specials = list(specials)
        self.chars = list(chars)
        if UNK not in self.specials:
            raise TokenizerError("a CharTokenizer needs the <unk> special token")
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise TokenizerError("CharTokenizer chars must be distinct single characters")
        self.itos = self.specials + self.chars
        self.stoi = {c: i for i, c in enumerate(self.chars, start=len(self.specials))}
        self.unk_id = self.specials.index(UNK)
        self._warned = False
        self._table: np.ndarray | None = None  # code point -> id, for encode_array (built on first use)

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        stoi, unk = self.stoi, self.unk_id
        ids = [stoi.get(c, unk) for c in text]
        if not self._warned and unk in ids:
            unseen = self.unseen(text)
            shown = "".join(unseen[:10]) + ("..." if len(unseen) > 10 else "")
            warnings.warn(f"{len(unseen)} character(s) not in the vocabulary map to <unk>: {shown!r}", stacklevel=2)
            self._warned = True
        return ids

    def unseen(self, text: str) -> str:
        """The distinct characters of `text` that are not in the vocabulary (they encode to <unk>), sorted."""
        return "".join(sorted(set(text) - self.stoi.keys()))

    def encode_array(self, text: str) -> np.ndarray:
        """encode() through a table indexed by code point: the same ids, without a Python loop over the characters."""
        if self._table is None:
            table = np.full(0x110000, self.unk_id, dtype=id_dtype(self.vocab_size))
            table[[ord(c) for c in self.chars]] = np.arange(len(self.specials), self.vocab_size)
            self._table = table
        if text.isascii():  # one byte per character: index the table's first 128 entries (a smaller read)
            ids = self._table[:128][np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        else:
            ids = self._table[np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]
        if not self._warned and self.unk_id in ids:
            self.encode(text)  # warns, naming the unseen characters
        return ids

    def cut(self, text: str, near: int) -> int | None:
        """Any place: each character is encoded on its own, so `near` itself."""
        return min(max(near, 1), len(text) - 1) if len(text) > 1 else None

    def decode(self, ids: Iterable[int]) -> str:
        n_special = len(self.specials)
        itos = self.itos
        return "".join(UNK_TEXT if i < n_special else itos[i] for i in ids)

    def id_to_piece(self, i: int) -> str:
        return self.itos[i]

    def to_dict(self) -> dict[str, Any]:
        return {"specials": self.specials, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
        return cls(d["chars"], d.get("specials", [UNK]))
