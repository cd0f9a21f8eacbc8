"""Word-level tokenizer: a fixed vocabulary of whole words (plus specials); text is split on whitespace."""
from __future__ import annotations

from typing import Any, Iterable

from tinygpt.tokenizers.base import Tokenizer, TokenizerError, register

UNK = "<unk>"


def _short(word: str, limit: int = 30) -> str:
    return repr(word if len(word) <= limit else word[:limit] + "...")


@register
class WordTokenizer(Tokenizer):
    """Vocabulary = the special tokens, then the given words, in that order (ids 0, 1, 2, ...).

    >>> tok = WordTokenizer(["two", "plus", "three"], specials=["<pad>"])
    >>> tok.encode("two plus three"), tok.decode([3, 2, 1])
    ([1, 2, 3], 'three plus two')

    Specials are written in text like words ("five <eos>" encodes to two ids). A word outside the
    vocabulary raises TokenizerError naming it, unless the tokenizer was made with `map_unknown=True`:
    then it maps to `<unk>`, which must be one of the specials. Decoding joins the pieces with single
    spaces, so `decode(encode(text))` is `text` with its whitespace normalised.
    """

    kind = "word"

    def __init__(self, words: Iterable[str], specials: Iterable[str] = (), map_unknown: bool = False):
        self.specials = list(specials)
        self.words = list(words)
        self.map_unknown = bool(map_unknown)
        self.itos = self.specials + self.words
        for w in self.itos:
            if not isinstance(w, str) or not w or w != w.strip() or len(w.split()) != 1:
                raise TokenizerError(f"vocabulary entries must be non-empty strings without whitespace, "
                                     f"got {_short(str(w))}")
        if len(set(self.itos)) != len(self.itos):
            dup = next(w for i, w in enumerate(self.itos) if w in self.itos[:i])
            raise TokenizerError(f"vocabulary entry {_short(dup)} appears twice")
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if self.map_unknown and UNK not in self.stoi:
            raise TokenizerError("map_unknown=True needs the <unk> special token")
        self.unk_id = self.stoi.get(UNK)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        ids = []
        for w in text.split():
            i = stoi.get(w)
            if i is None:
                if not self.map_unknown:
                    shown = ", ".join(self.words[:6]) + (", ..." if len(self.words) > 6 else "")
                    raise TokenizerError(f"unknown word {_short(w)}: it is not in the vocabulary of "
                                         f"{self.vocab_size} entries ({shown})")
                i = self.unk_id
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.id_to_piece(int(i)) for i in ids)

    def id_to_piece(self, i: int) -> str:
        if not 0 <= i < len(self.itos):
            raise TokenizerError(f"token id {i} is outside the vocabulary (0..{len(self.itos) - 1})")
        return self.itos[i]

    def to_dict(self) -> dict[str, Any]:
        return {"specials": self.specials, "words": self.words, "map_unknown": self.map_unknown}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WordTokenizer":
        return cls(d["words"], d.get("specials", []), d.get("map_unknown", False))
