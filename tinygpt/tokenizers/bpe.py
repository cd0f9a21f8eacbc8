"""Byte-level BPE tokenizer (GPT-2 style): regex pre-tokenization, fast incremental training, cached encoding.

Two speed-ups live in modules of their own, each beside the plain way it must equal: ascii_pattern.py (the
chunks of a known pattern through the stdlib `re`; pretokenize here is the reference) and chunk_cache.py (each
distinct chunk encoded once; _encode_chunk is the reference).
"""
from __future__ import annotations

import heapq
import os
import unicodedata
from collections import Counter, defaultdict
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Union

import numpy as np
import regex

from tinygpt.files import write_text
from tinygpt.tokenizers.ascii_pattern import SAFE_CUT, SAFE_CUT_BACK, ascii_pattern, fast_chunks
from tinygpt.tokenizers.base import Tokenizer, TokenizerError, id_dtype, register
from tinygpt.tokenizers.chunk_cache import ChunkCache, PackedChunkCache

# The split patterns of GPT-2 and GPT-4 (cl100k), as published in tiktoken. Both match every character,
# so the chunks of a text always concatenate back to the text.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
# The `re` twins of the known patterns, for ASCII text (None where `re` cannot compile one)
ASCII_PATTERNS = {name: ascii_pattern(source) for name, source in PATTERNS.items()}
ENDOFTEXT = "<|endoftext|>"

Pair = tuple[int, int]
ProgressFn = Callable[[int, int], None]  # progress(merges_done, merges_total)
AllowedSpecial = Union[Literal["none", "none_raise", "all"], set, frozenset, list, tuple]
NO_MERGE = 1 << 62  # larger than any token id


def resolve_pattern(pattern: str) -> str:
    """A pattern name ("gpt2", "gpt4") or a regex -> the regex; checked so that findall returns whole matches."""
    if pattern not in PATTERNS and regex.fullmatch(r"\w+", pattern):  # a mistyped name, not a useful regex
        raise TokenizerError(f"unknown split pattern name {pattern!r} (known: {', '.join(PATTERNS)}, or a regex)")
    source = PATTERNS.get(pattern, pattern)
    try:
        compiled = regex.compile(source)
    except regex.error as e:
        raise TokenizerError(f"bad split pattern {pattern!r}: {e}") from None
    if compiled.groups:
        raise TokenizerError(f"split pattern {pattern!r} has capturing groups; use (?:...) instead")
    return source


def well_formed(text: str) -> str:
    """Replace lone surrogates (UTF-8 cannot encode them) with U+FFFD; join valid pairs, as tiktoken does.

    >>> well_formed("a\\ud800b"), well_formed("\\ud83d\\ude00")
    ('a\ufffdb', '😀')
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def pretokenize(pattern: regex.Pattern, text: str, covers_all: bool) -> list[str]:
    """Cut text into pre-tokenization chunks, the pieces BPE merges within (covers_all: the pattern matches every
    character, as the known ones do). Text a custom pattern skips becomes chunks too, so nothing is lost.

    >>> pretokenize(regex.compile(GPT2_PATTERN), "Hello world's 42", True)
    ['Hello', ' world', "'s", ' 42']
    """
    chunks = pattern.findall(text)
    if covers_all or sum(map(len, chunks)) == len(text):
        return chunks
    chunks, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            chunks.append(text[pos : m.start()])
        chunks.append(m.group())
        pos = m.end()
    if pos < len(text):
        chunks.append(text[pos:])
    return chunks


def render_piece(b: bytes) -> str:
    """Readable, unambiguous form of a token's bytes: b' the' -> ' the', b'\\n' -> '\\n', b'\\xe2' -> '\\xe2'."""
    out = []
    for ch in b.decode("utf-8", errors="surrogateescape"):  # invalid bytes come back as U+DC80..U+DCFF
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch != " " and unicodedata.category(ch)[0] in "CZ":  # control, format, separators: escape them
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


# --- training ---------------------------------------------------------------------------------------
def learn_merges(chunk_counts: dict[str, int], n_merges: int, progress: ProgressFn | None = None) -> list[Pair]:
    """Learn up to n_merges merges from chunk -> count, updating pair counts incrementally after each merge.

    Each step merges the most frequent adjacent pair; ties go to the smallest pair (first id, then second id).
    Training stops early when no chunk has two tokens left. Each merge costs time in proportion to the
    chunks that hold the merged pair, not to the corpus (the slow obvious version recounts everything).
    """
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    pair_counts: dict[Pair, int] = defaultdict(int)  # pair -> occurrences, weighted by chunk count
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> words that contain it (may hold stale entries)
    for w, word in enumerate(words):
        f = freqs[w]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += f
            where[pair].add(w)
    # A max-heap of (-count, pair) with lazy deletion: entries whose count is out of date are skipped
    # when popped; every count change pushes a fresh entry. Tuple order gives the tie-breaking rule.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    while len(merges) < n_merges:
        best = None
        while heap:
            neg_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair) == -neg_count:
                best = pair
                break
        if best is None:
            break  # every chunk is a single token
        new_id = 256 + len(merges)
        merges.append(best)
        delta: dict[Pair, int] = defaultdict(int)
        for w in where.pop(best):
            words[w] = _merge_counting(words[w], best, new_id, freqs[w], delta, where, w)
        del pair_counts[best]  # merging left to right leaves no adjacent (a, b), so its count is exactly 0
        delta.pop(best, None)
        for pair, d in delta.items():
            if d:
                count = pair_counts[pair] + d
                if count > 0:
                    pair_counts[pair] = count
                    heapq.heappush(heap, (-count, pair))
                else:
                    del pair_counts[pair]
                    where.pop(pair, None)
        if progress is not None:
            progress(len(merges), n_merges)
    return merges


def _merges_for(vocab_size: int, special_tokens: list[str]) -> int:
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise TokenizerError(f"vocab_size {vocab_size} is below 256 bytes + {len(special_tokens)} special tokens")
    return n_merges


def _merge_counting(word: list[int], pair: Pair, new_id: int, f: int, delta: dict, where: dict, w: int) -> list[int]:
    """Replace (a, b) by new_id in word, recording the pair-count changes next to each merge in delta.

    Example, a b c a b with (a, b) -> X: (c, a) and (b, c) go, (X, c) and (c, X) come.
    The left neighbour is read from the output, so back-to-back merges (a b a b -> X X) count right.
    """
    a, b = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if word[i] == a and i + 1 < n and word[i + 1] == b:
            if out:
                left = out[-1]
                delta[left, a] -= f
                delta[left, new_id] += f
                where[left, new_id].add(w)
            if i + 2 < n:
                right = word[i + 2]
                delta[b, right] -= f
                delta[new_id, right] += f
                where[new_id, right].add(w)
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every (a, b) in ids, left to right, by new_id: [1, 2, 3, 1, 2], (1, 2), 9 -> [9, 3, 9]."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if ids[i] == pair[0] and i + 1 < n and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@register
class ByteBPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0-255 are bytes, id 256 + k is merge k, special tokens come last.

    >>> tok = ByteBPETokenizer.train("aaabdaaabac", 259, pattern=r"[\\s\\S]+")
    >>> tok.merges, tok.encode("aaabdaaabac")
    ([(97, 97), (97, 98), (256, 257)], [258, 100, 258, 97, 99])

    Text is split into chunks by a regex (`pattern`: "gpt2" (default), "gpt4" or your own regex), and
    merges never cross chunk boundaries. Any string round-trips: decode(encode(s)) == s, with one
    exception, lone surrogates (U+D800-U+DFFF unpaired), which UTF-8 cannot encode: they are replaced
    by U+FFFD before encoding, as tiktoken does (a correctly paired surrogate becomes its character).
    Decoding ids that do not form valid UTF-8 (e.g. half a character) gives U+FFFD in their place.

    Special tokens (e.g. "<|endoftext|>") in ordinary text: `encode(text, allowed_special=...)` with
    "none" (default): encoded as ordinary text, so user text can never inject a control token;
    "none_raise": raise TokenizerError if one appears; "all" or a set of strings: those become their ids.
    Training ignores special-token strings found in the training text.
    """

    kind = "bpe"

    def __init__(self, merges: Iterable[Iterable[int]] = (), pattern: str = "gpt2",
                 special_tokens: Iterable[str] = (), byte_order: Iterable[int] | None = None):
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.pattern = next((name for name, src in PATTERNS.items() if src == pattern), pattern)
        self.special_tokens = list(special_tokens)
        # byte_order[i] is the byte whose id is i; identity for trained tokenizers, GPT-2's order on import.
        self.byte_order = list(range(256)) if byte_order is None else [int(b) for b in byte_order]
        if sorted(self.byte_order) != list(range(256)):
            raise TokenizerError("byte_order must list each of the 256 byte values once")
        if len(set(self.special_tokens)) != len(self.special_tokens) or "" in self.special_tokens:
            raise TokenizerError("special tokens must be distinct non-empty strings")
        self._split_re = regex.compile(resolve_pattern(self.pattern))
        self._covers_all = self.pattern in PATTERNS
        self._ascii_re = ASCII_PATTERNS.get(self.pattern)
        self._byte_ids = [0] * 256
        for i, byte in enumerate(self.byte_order):
            self._byte_ids[byte] = i
        self._identity = self.byte_order == list(range(256))
        # Derived tables: id -> bytes (decode) and pair -> merged id (encode; lower id = earlier merge).
        self.id_to_bytes: dict[int, bytes] = {i: bytes([byte]) for i, byte in enumerate(self.byte_order)}
        self._merge_ids: dict[Pair, int] = {}
        for new_id, (a, b) in enumerate(self.merges, start=256):
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise TokenizerError(f"merge {new_id - 256} ({a}, {b}) refers to a token not yet defined")
            self.id_to_bytes[new_id] = self.id_to_bytes[a] + self.id_to_bytes[b]
            self._merge_ids.setdefault((a, b), new_id)
        first_special = 256 + len(self.merges)
        self.special_ids = {s: first_special + k for k, s in enumerate(self.special_tokens)}
        for s, i in self.special_ids.items():
            self.id_to_bytes[i] = s.encode("utf-8")
        self._cache = ChunkCache(self._encode_chunk)
        self._packed = PackedChunkCache(self._encode_chunk, id_dtype(self.vocab_size))  # for encode_array
        self._special_res: dict[frozenset, regex.Pattern] = {}

    # --- training ---------------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int, pattern: str = "gpt2",
              special_tokens: Iterable[str] = (), progress: ProgressFn | None = None) -> "ByteBPETokenizer":
        """Learn vocab_size - 256 - len(special_tokens) merges from a text or an iterable of texts."""
        special_tokens = list(special_tokens)
        _merges_for(vocab_size, special_tokens)  # a bad size is refused before the (long) counting
        tok = cls(pattern=pattern, special_tokens=special_tokens)  # validates pattern and specials first
        return cls.train_from_counts(tok.chunk_counts(text), vocab_size, pattern, special_tokens, progress)

    @classmethod
    def train_from_counts(cls, counts: dict[str, int], vocab_size: int, pattern: str = "gpt2",
                          special_tokens: Iterable[str] = (), progress: ProgressFn | None = None
                          ) -> "ByteBPETokenizer":
        """Learn the merges from chunk counts (see chunk_counts): counts of a text's pieces, added up, train
        the same tokenizer as the whole text, so a large corpus can be counted piece by piece."""
        special_tokens = list(special_tokens)
        n_merges = _merges_for(vocab_size, special_tokens)
        return cls(learn_merges(counts, n_merges, progress), pattern, special_tokens)

    def chunk_counts(self, text: str | Iterable[str]) -> Counter[str]:
        """How often each pre-tokenization chunk occurs in a text (or texts), special tokens left out: all
        that training learns from."""
        specials_re = self._special_re(frozenset(self.special_tokens)) if self.special_tokens else None
        counts: Counter[str] = Counter()
        for t in [text] if isinstance(text, str) else text:
            for part in specials_re.split(well_formed(t))[::2] if specials_re else [well_formed(t)]:
                counts.update(self.chunks(part))
        return counts

    # --- encoding ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    def encode(self, text: str, allowed_special: AllowedSpecial = "none") -> list[int]:
        """Text -> ids; see the class docstring for `allowed_special`."""
        text = well_formed(text)
        if allowed_special == "none":
            return self.encode_ordinary(text)
        if allowed_special == "none_raise":
            found = [s for s in self.special_tokens if s in text]
            if found:
                raise TokenizerError(f"text contains special token {found[0]!r}; pass allowed_special='all' "
                                     "to encode it as a special token, or 'none' to encode it as text")
            return self.encode_ordinary(text)
        if isinstance(allowed_special, str) and allowed_special != "all":
            raise TokenizerError(f"allowed_special must be 'none', 'none_raise', 'all' or a set of special tokens, "
                                 f"not {allowed_special!r}")
        allowed = frozenset(self.special_tokens if allowed_special == "all" else allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise TokenizerError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # split() with one capturing group alternates: ordinary text, special, ordinary text, ...
        for k, part in enumerate(self._special_re(allowed).split(text)):
            if k % 2:
                ids.append(self.special_ids[part])
            else:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, with no special-token handling (the hot path)."""
        return self._cache.encode(self.chunks(well_formed(text)))

    def encode_batch(self, texts: Iterable[str], allowed_special: AllowedSpecial = "none") -> list[list[int]]:
        return [self.encode(t, allowed_special) for t in texts]

    def encode_array(self, text: str) -> np.ndarray:
        """encode(text) as a (read-only) array, joined from each chunk's cached bytes: no Python ints between."""
        return self._packed.encode_array(self.chunks(well_formed(text)))

    def cut(self, text: str, near: int) -> int | None:
        """The last place at or before `near` (else the first after it) where a text may be cut, SAFE_CUT's:
        before a space that follows a non-space character, or after a newline between two. None when there
        is none, or when the split pattern is a custom one (nothing is known about it)."""
        if not self._covers_all or len(text) < 2:
            return None
        near = min(max(near, 1), len(text) - 1)
        m = SAFE_CUT_BACK.search(text, 0, near + 1) or SAFE_CUT.search(text, near - 1)
        return m.end() if m and 0 < m.end() < len(text) else None

    def chunks(self, text: str) -> list[str]:
        """The pre-tokenization chunks of a (well-formed) text: pretokenize(pattern, text), the reference; a known
        pattern takes fast_chunks (ascii_pattern.py), which gives the same list faster."""
        if self._ascii_re is None:
            return pretokenize(self._split_re, text, self._covers_all)
        return fast_chunks(text, self._split_re, self._ascii_re)

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        """One chunk: start from bytes, then apply the earliest-learned merge present, until none applies."""
        data = chunk.encode("utf-8")
        ids = list(data) if self._identity else [self._byte_ids[b] for b in data]
        while len(ids) >= 2:
            # the id each adjacent pair would merge into, NO_MERGE if none; the smallest was learned first
            new_id = min(map(self._merge_ids.get, zip(ids, ids[1:]), repeat(NO_MERGE)))
            if new_id == NO_MERGE:
                break
            ids = merge_pair(ids, self.merges[new_id - 256], new_id)
        return tuple(ids)

    def _special_re(self, specials: frozenset) -> regex.Pattern:
        if specials not in self._special_res:
            alternatives = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
            self._special_res[specials] = regex.compile(f"({alternatives})")
        return self._special_res[specials]

    # --- decoding ---------------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        try:
            return b"".join(map(self.id_to_bytes.__getitem__, ids))
        except KeyError as e:
            raise TokenizerError(f"token id {e.args[0]!r} is not in the vocabulary (size {self.vocab_size})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; byte sequences that are not valid UTF-8 decode to U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_piece(self, i: int) -> str:
        if i >= 256 + len(self.merges) and i in self.id_to_bytes:
            return self.special_tokens[i - 256 - len(self.merges)]
        try:
            return render_piece(self.id_to_bytes[i])
        except KeyError:
            raise TokenizerError(f"token id {i!r} is not in the vocabulary (size {self.vocab_size})") from None

    # --- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pattern": self.pattern, "special_tokens": self.special_tokens,
                             "merges": [list(m) for m in self.merges]}
        if not self._identity:
            d["byte_order"] = self.byte_order
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ByteBPETokenizer":
        return cls(d["merges"], d.get("pattern", "gpt2"), d.get("special_tokens", []), d.get("byte_order"))

    def vocab_lines(self) -> list[str]:
        """One line per token: id, [piece], and where it came from (its byte, its merge, or 'special')."""
        lines = []
        for i in range(self.vocab_size):
            if i < 256:
                origin = f"byte 0x{self.byte_order[i]:02x}"
            elif i < 256 + len(self.merges):
                a, b = self.merges[i - 256]
                origin = f"[{self.id_to_piece(a)}] + [{self.id_to_piece(b)}]  ({a} + {b})"
            else:
                origin = "special"
            lines.append(f"{i}\t[{self.id_to_piece(i)}]\t{origin}")
        return lines

    def save_vocab(self, path: str | os.PathLike) -> None:
        """Write the human-readable vocabulary view (see vocab_lines); it is not read back."""
        header = f"# {type(self).__name__} vocab_size={self.vocab_size} pattern={self.pattern}\n"
        write_text(Path(path), header + "\n".join(self.vocab_lines()) + "\n")
