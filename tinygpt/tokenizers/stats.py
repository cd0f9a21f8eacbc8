"""How a tokenizer does on a text: bytes per token, vocabulary usage, its longest and most used tokens."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tinygpt.tokenizers.base import Tokenizer


@dataclass
class TokenizerStats:
    n_bytes: int  # UTF-8 bytes of the text
    n_tokens: int
    vocab_size: int
    vocab_used: int  # distinct ids in the encoded text
    longest: list[tuple[int, str, int]]  # (id, piece, length in bytes): the longest tokens of the vocabulary
    most_common: list[tuple[int, str, int]]  # (id, piece, count): the most used tokens in the text

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(self.n_tokens, 1)

    @property
    def vocab_usage(self) -> float:
        return self.vocab_used / max(self.vocab_size, 1)


def token_bytes(tok: Tokenizer, i: int) -> bytes:
    """The bytes token i stands for (byte-level tokenizers keep a table; others decode the token alone)."""
    table = getattr(tok, "id_to_bytes", None)
    return table[i] if table is not None else tok.decode([i]).encode("utf-8")


def tokenizer_stats(tok: Tokenizer, text: str, top: int = 10) -> TokenizerStats:
    ids = tok.encode(text)
    counts = Counter(ids)
    specials = set(getattr(tok, "special_ids", {}).values())  # not learned, so not listed among the longest
    learned = (i for i in range(tok.vocab_size) if i not in specials)
    lengths = sorted(((len(token_bytes(tok, i)), i) for i in learned), key=lambda t: (-t[0], t[1]))
    return TokenizerStats(
        n_bytes=len(text.encode("utf-8", errors="replace")), n_tokens=len(ids), vocab_size=tok.vocab_size,
        vocab_used=len(counts),
        longest=[(i, tok.id_to_piece(i), n) for n, i in lengths[:top]],
        most_common=[(i, tok.id_to_piece(i), c) for i, c in counts.most_common(top)],
    )
