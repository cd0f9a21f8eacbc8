"""The chat template's tokens: any tokenizer plus four special tokens that mark the turns of a conversation.

    <|system|>You add numbers.<|end|><|user|>what is two plus three?<|end|><|assistant|>five.<|end|>

The specials take the ids right after the base tokenizer's vocabulary (base.vocab_size + 0..3), so every
existing id keeps its meaning and a base model's weights carry over: fine-tuning only adds four rows to
the embedding. Text never encodes to a special id, whatever it contains: a user who types "<|end|>" gets
those characters, not the end of a turn. Rendering conversations (ids and the loss mask) is chat.py.
"""
from __future__ import annotations

from typing import Any, Iterable

from tinygpt.tokenizers.base import Tokenizer, TokenizerError, register, tokenizer_from_dict

ROLES = ("system", "user", "assistant")
END = "<|end|>"
SPECIALS = tuple(f"<|{role}|>" for role in ROLES) + (END,)


@register
class ChatTokenizer(Tokenizer):
    """A base tokenizer (character, word, byte-level BPE, imported GPT-2) with the chat specials after it.

    >>> from tinygpt.tokenizers import CharTokenizer
    >>> tok = ChatTokenizer(CharTokenizer.train("hi"))
    >>> tok.vocab_size, tok.role_id("user"), tok.end_id, tok.encode("hi")
    (7, 4, 6, [1, 2])
    """

    kind = "chat"

    def __init__(self, base: Tokenizer, specials: Iterable[str] = SPECIALS):
        if isinstance(base, ChatTokenizer):
            raise TokenizerError("this tokenizer already has the chat tokens")
        self.base = base
        self.specials = list(specials)
        if self.specials != list(SPECIALS):
            raise TokenizerError(f"the chat specials must be {', '.join(SPECIALS)} in that order")
        first = base.vocab_size
        self.special_ids = {s: first + k for k, s in enumerate(self.specials)}
        self.end_id = self.special_ids[END]

    def role_id(self, role: str) -> int:
        """The id that opens a turn of `role` ("system", "user" or "assistant")."""
        if role not in ROLES:
            raise TokenizerError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        return self.special_ids[f"<|{role}|>"]

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.specials)

    def encode(self, text: str) -> list[int]:
        """The base tokenizer's ids: text alone never makes a special token."""
        return self.base.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Base ids decode as the base does; a special decodes to its name ("<|end|>")."""
        first = self.base.vocab_size
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if i < first:
                run.append(i)
                continue
            if run:
                parts.append(self.base.decode(run))
                run = []
            parts.append(self.id_to_piece(i))
        if run:
            parts.append(self.base.decode(run))
        return (" " if self.base.kind == "word" else "").join(parts)

    def id_to_piece(self, i: int) -> str:
        first = self.base.vocab_size
        if first <= i < self.vocab_size:
            return self.specials[i - first]
        return self.base.id_to_piece(i)

    def to_dict(self) -> dict[str, Any]:
        return {"base": {"type": self.base.kind, **self.base.to_dict()}, "specials": self.specials}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChatTokenizer":
        return cls(tokenizer_from_dict(d["base"]), d.get("specials", SPECIALS))


__all__ = ["ChatTokenizer", "ROLES", "SPECIALS", "END"]
