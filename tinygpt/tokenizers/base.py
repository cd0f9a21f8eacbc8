"""The tokenizer interface every tinygpt tokenizer implements, plus JSON persistence and a registry."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

from tinygpt.files import write_text

FORMAT_VERSION = 1

# name -> class; filled by @register. load_tokenizer() dispatches on the "type" field of the file.
REGISTRY: dict[str, type["Tokenizer"]] = {}


def register(cls: type["Tokenizer"]) -> type["Tokenizer"]:
    REGISTRY[cls.kind] = cls
    return cls


class TokenizerError(ValueError):
    """Raised for a tokenizer file or a text the tokenizer cannot handle."""


def id_dtype(vocab_size: int) -> np.dtype:
    """How token ids are stored (arrays, prepared .bin files): uint16 when the vocabulary fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class Tokenizer:
    """Text <-> list of integer ids.

    Subclasses set `kind`, implement `encode`, `decode`, `vocab_size`, `id_to_piece`, and the pair
    `to_dict` / `from_dict` holding their minimal learned state (everything else is derived).
    """

    kind: ClassVar[str] = "base"

    # --- the interface ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def id_to_piece(self, i: int) -> str:
        """A readable form of one token, for tables and plots (e.g. 'ation', '\\n', '<unk>')."""
        raise NotImplementedError

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_array(self, text: str) -> np.ndarray:
        """encode(text) as an array of id_dtype(vocab_size); subclasses may have a faster path (tested equal)."""
        return np.asarray(self.encode(text), dtype=id_dtype(self.vocab_size))

    def cut(self, text: str, near: int) -> int | None:
        """A place 0 < p < len(text), the last at or before `near` if any, else the first after it, where
        cutting changes no id, whatever text comes before `text` or after it:
        encode(a + text[:p]) + encode(text[p:] + b) == encode(a + text + b). None if the tokenizer knows no
        such place. Large texts are encoded in pieces cut there, in parallel (prepare.py)."""
        return None

    def pieces(self, text: str) -> list[str]:
        """The text cut into the readable pieces its tokens stand for."""
        return [self.id_to_piece(i) for i in self.encode(text)]

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tokenizer":
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as one versioned JSON file, atomically (temporary file + rename)."""
        payload = {"type": self.kind, "version": FORMAT_VERSION, **self.to_dict()}
        write_text(Path(path), json.dumps(payload, ensure_ascii=False, indent=1))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    kind = d.get("type")
    if kind not in REGISTRY:
        raise TokenizerError(f"unknown tokenizer type {kind!r} (known: {', '.join(sorted(REGISTRY))})")
    if d.get("version", 0) > FORMAT_VERSION:
        raise TokenizerError(f"tokenizer file version {d['version']} is newer than this tinygpt reads ({FORMAT_VERSION})")
    return REGISTRY[kind].from_dict(d)


def read_json(path: Path) -> Any:
    """A tokenizer file's JSON, with one-line errors for a missing or malformed file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"tokenizer file {path} is not valid JSON: {e}") from None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load any tinygpt tokenizer from its JSON file."""
    path = Path(path)
    d = read_json(path)
    if not isinstance(d, dict):
        raise TokenizerError(f"tokenizer file {path} does not hold a JSON object")
    try:
        return tokenizer_from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, TokenizerError):
            raise
        raise TokenizerError(f"tokenizer file {path} is malformed: {e!r}") from None
