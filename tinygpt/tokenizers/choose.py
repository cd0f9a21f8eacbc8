"""Pick the tokenizer of a new training run: a character vocabulary, a (cached) BPE, or a given file."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from tinygpt.config import SettingText
from tinygpt.tokenizers.base import Tokenizer, TokenizerError, load_tokenizer
from tinygpt.tokenizers.bpe import ByteBPETokenizer
from tinygpt.tokenizers.char import CharTokenizer

DEFAULT_BPE_VOCAB = 4096


def bpe_cache_key(text: str, vocab_size: int, pattern: str) -> str:
    h = hashlib.sha256()
    for part in (f"{vocab_size}\0{pattern}\0", text):
        h.update(part.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def tokenizer_spec(spec: str, vocab_size: int | None = None) -> tuple[str, int | None]:
    """Check what `tokenizer` and `vocab_size` ask for: ("char", None), ("bpe", its vocabulary size) or
    ("file", None); a mistake is a one-line TokenizerError."""
    if spec == "char":
        if vocab_size:
            raise TokenizerError(SettingText("`vocab_size` applies to BPE tokenizers only (a character vocabulary "
                                             "comes from the text)", "vocab_size"))
        return "char", None
    if spec == "bpe":
        vocab_size = vocab_size or DEFAULT_BPE_VOCAB
        if vocab_size <= 256:
            raise TokenizerError(SettingText(f"`vocab_size` must be > 256 for a byte-level BPE (got {vocab_size})",
                                             "vocab_size"))
        return "bpe", vocab_size
    p = Path(spec)
    if p.suffix == ".json" or p.exists():
        if vocab_size:
            raise TokenizerError(SettingText(f"`vocab_size` applies to a BPE tokenizer trained here; {spec} brings its "
                                             f"own vocabulary", "vocab_size"))
        return "file", None
    raise TokenizerError(f"unknown tokenizer {spec!r}: use char, bpe or the path of a tokenizer .json file")


def tokenizer_for_training(spec: str, train_text: str, vocab_size: int | None = None,
                           cache_dir: Path | None = None,
                           progress: Callable[[int, int], None] | None = None) -> tuple[Tokenizer, str]:
    """spec: "char", "bpe" or the path of a tokenizer JSON file. Returns (tokenizer, how it was obtained).

    A BPE tokenizer is trained on `train_text` (the training split only, so validation stays unseen) and
    cached under cache_dir keyed by a hash of the text, the vocabulary size and the split pattern.
    """
    kind, vocab_size = tokenizer_spec(spec, vocab_size)
    if kind == "char":
        return CharTokenizer.train(train_text), "built a character vocabulary from the training split"
    if kind == "bpe":
        assert vocab_size is not None
        path = None
        if cache_dir is not None:
            path = cache_dir / f"bpe-{bpe_cache_key(train_text, vocab_size, 'gpt2')}.json"
            if path.exists():
                try:
                    return load_tokenizer(path), f"reused the cached BPE tokenizer {path}"
                except TokenizerError:
                    pass  # a damaged cache entry: train again and replace it
        tok = ByteBPETokenizer.train(train_text, vocab_size, progress=progress)
        if path is not None:
            tok.save(path)
        return tok, f"trained a BPE tokenizer ({tok.vocab_size} tokens) on the training split"
    return load_tokenizer(spec), f"loaded the tokenizer {spec}"
