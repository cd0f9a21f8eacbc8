"""The steady heap: freed memory kept in the process while training on CPU, so each step reuses the last one's.

PyTorch's CPU tensors come straight from malloc. glibc serves large blocks with fresh mmap()s and returns
freed memory at the top of its heap to the system, so every training step faults its activations in again,
page by page, and the kernel zeroes each page first: work that grows with the activations and can be a sizeable
part of a CPU step. Without the steady heap the results are the same, only slower.
"""
from __future__ import annotations

import contextlib
import ctypes
import platform
from typing import Iterator

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


def _glibc() -> ctypes.CDLL | None:
    """The C library through ctypes when it is glibc (Linux), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def steady_heap(device: str) -> Iterator[None]:
    """Keep freed memory in the process while training on CPU, then give it back.

    Inside this context (glibc only, CPU runs only) large blocks come from the heap and nothing is trimmed, so
    a step reuses the previous step's pages; the price is that the process keeps its peak memory until the
    context ends, when the free memory is handed back (malloc_trim) and glibc's defaults are restored."""
    libc = _glibc() if device.split(":")[0] == "cpu" else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    try:
        yield
    finally:
        for param, value in _GLIBC_DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)
