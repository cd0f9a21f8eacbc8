"""Tokenizers: a common interface (base.py) and one idea per subclass."""
from .base import REGISTRY, Tokenizer, TokenizerError, load_tokenizer, tokenizer_from_dict
from .bpe import ByteBPETokenizer
from .char import CharTokenizer
from .chat import ChatTokenizer
from .word import WordTokenizer

__all__ = ["REGISTRY", "Tokenizer", "TokenizerError", "load_tokenizer", "tokenizer_from_dict", "CharTokenizer",
           "ByteBPETokenizer"]
__all__ += ["WordTokenizer", "ChatTokenizer"]
