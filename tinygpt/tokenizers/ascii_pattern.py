"""A known split pattern translated to the stdlib `re` for ASCII text, and pre-tokenization through it.

BPE cuts text into chunks with a `regex` pattern (bpe.py: GPT-2's or GPT-4's; `pretokenize` is the reference).
On pure-ASCII text the same chunks come faster from the stdlib `re`, once \\p{L}, \\p{N} and \\s are spelled out
as ASCII classes (`ascii_pattern`). `fast_chunks` uses that twin on ASCII text and on the ASCII stretches of
mixed text, and `regex` only around the non-ASCII characters; it returns the same list as the reference
(tests/test_prepare.py compares them on every Unicode character and on random mixed text).
"""
from __future__ import annotations

import re

import regex

# Where a text may be cut without changing its chunks under either known pattern: after a non-space character
# followed by a plain space, or after a newline between two non-space characters. The match holding that
# character ends there in both patterns (none runs from a non-space character into a space, nor on from a
# lone newline into a non-space), none looks behind, and the only lookahead, (?!\S), follows a run of
# whitespace; so the chunks left of such a place are the same whatever follows it, and those right of it
# start there afresh whatever precedes it. tests/test_prepare.py checks this on texts of mixed whitespace.
_CUT = r"\S(?= )|\S\n(?=\S)"  # a place to cut is the end of a match
SAFE_CUT = regex.compile(_CUT)
SAFE_CUT_BACK = regex.compile("(?r)" + _CUT)
NON_ASCII = re.compile(r"[^\x00-\x7f]+")
DENSE = 100  # about one non-ASCII character in DENSE or more: regex on the whole text (see fast_chunks)


def ascii_pattern(source: str) -> re.Pattern | None:
    """The stdlib `re` twin of a known pattern for pure-ASCII text, where \\p{L} is A-Za-z, \\p{N} is 0-9 and
    \\s is what `regex` calls whitespace among ASCII characters. None where `re` cannot compile it (possessive
    quantifiers need Python 3.11).

    >>> ascii_pattern(r" ?\\p{L}+| ?\\p{N}+").pattern
    ' ?[A-Za-z]+| ?[0-9]+'
    """
    ws = "".join(f"\\x{c:02x}" for c in range(128) if regex.match(r"\s", chr(c)))
    classes = {r"\p{L}": "A-Za-z", r"\p{N}": "0-9", r"\s": ws}
    out, i, in_class = [], 0, False
    while i < len(source):
        name = next((k for k in (*classes, r"\S") if source.startswith(k, i)), None)
        if name == r"\S":
            if in_class:
                return None
            out.append(f"[^{ws}]")
        elif name:
            out.append(classes[name] if in_class else f"[{classes[name]}]")
        else:
            name = source[i:i + 2] if source[i] == "\\" else source[i]
            in_class = (in_class or name == "[") and name != "]"
            out.append(name)
        i += len(name)
    try:
        return re.compile("".join(out))
    except re.error:
        return None


def fast_chunks(text: str, split_re: regex.Pattern, ascii_re: re.Pattern) -> list[str]:
    """pretokenize(split_re, text, covers_all=True) for a known pattern and its `re` twin ascii_re, faster:
    ASCII text goes through the twin whole; text with a few non-ASCII characters by stretches
    (chunks_by_stretch); denser text through `regex` whole, where short stretches would cost more."""
    if text.isascii():
        return ascii_re.findall(text)
    if DENSE * (len(text.encode("utf-8")) - len(text)) > len(text):
        return split_re.findall(text)
    return chunks_by_stretch(text, split_re, ascii_re)


def chunks_by_stretch(text: str, split_re: regex.Pattern, ascii_re: re.Pattern) -> list[str]:
    """The chunks of a text with non-ASCII characters: `re` on the ASCII stretches, `regex` on the rest, from
    the SAFE_CUT place before each non-ASCII run to the one after it. Chunks never change by cutting there, so
    the list is split_re's."""
    out: list[str] = []
    pos, n = 0, len(text)
    for m in NON_ASCII.finditer(text):
        if m.start() < pos:
            continue  # inside the last stretch already
        left = SAFE_CUT_BACK.search(text, pos, m.start() + 1)
        right = SAFE_CUT.search(text, m.end() - 1)
        a, b = (left.end() if left else pos), (right.end() if right else n)
        out += ascii_re.findall(text[pos:a])
        out += split_re.findall(text[a:b])
        pos = b
    out += ascii_re.findall(text[pos:])
    return out
