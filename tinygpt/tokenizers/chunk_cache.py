"""BPE's chunk caches: each distinct chunk is encoded once, as ids (encode) or as packed bytes (encode_array).

Text repeats its chunks (" the", ",", "\\n"), and a chunk's ids depend on the chunk alone, so encoding a text
is a dictionary lookup per chunk; only chunks never seen before run the merges. The reference is encoding every
chunk afresh (ByteBPETokenizer._encode_chunk); tests/test_bpe.py checks both caches against it.
"""
from __future__ import annotations

from itertools import chain
from typing import Callable

import numpy as np

CACHE_LIMIT = 1 << 18  # entries kept between encode calls (memory stays bounded on huge corpora)


class ChunkCache(dict):
    """chunk -> ids; a miss computes and stores the ids, so the hot loop is a C-level map over the chunks."""

    def __init__(self, encode_chunk: Callable[[str], tuple[int, ...]]):
        super().__init__()
        self.encode_chunk = encode_chunk

    def __missing__(self, chunk: str) -> tuple[int, ...]:
        ids = self[chunk] = self.encode_chunk(chunk)
        return ids

    def encode(self, chunks: list[str]) -> list[int]:
        """The ids of the chunks, one after the other."""
        self._bound()
        return list(chain.from_iterable(map(self.__getitem__, chunks)))

    def _bound(self) -> None:
        if len(self) > CACHE_LIMIT:
            self.clear()


class PackedChunkCache(ChunkCache):
    """chunk -> its ids as the bytes of an array of `dtype`: joining bytes beats converting Python ints."""

    def __init__(self, encode_chunk: Callable[[str], tuple[int, ...]], dtype: np.dtype):
        super().__init__(encode_chunk)
        self.dtype = dtype

    def __missing__(self, chunk: str) -> bytes:
        packed = self[chunk] = np.array(self.encode_chunk(chunk), dtype=self.dtype).tobytes()
        return packed

    def encode_array(self, chunks: list[str]) -> np.ndarray:
        """The ids of the chunks as one (read-only) array: no Python ints between."""
        self._bound()
        return np.frombuffer(b"".join(map(self.__getitem__, chunks)), dtype=self.dtype)
