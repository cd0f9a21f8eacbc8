"""Tokenizers: a common interface (base.py) and one idea per subclass."""
from tinygpt.tokenizers.base import REGISTRY, Tokenizer, TokenizerError, load_tokenizer, tokenizer_from_dict
from tinygpt.tokenizers.bpe import ByteBPETokenizer
from tinygpt.tokenizers.char import CharTokenizer
from tinygpt.tokenizers.chat import ChatTokenizer
from tinygpt.tokenizers.word import WordTokenizer

__all__ = ["REGISTRY", "Tokenizer", "TokenizerError", "load_tokenizer", "tokenizer_from_dict", "CharTokenizer",
           "ByteBPETokenizer"]
__all__ += ["WordTokenizer", "ChatTokenizer"]
