"""Writing an output file safely: the old file stays whole until the new one is complete."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `out` (same suffix, so writers infer the format); on success it
    replaces `out` in one rename, on any error it is deleted and `out` is left as it was.

        with atomic_path("plot.png") as tmp:
            fig.savefig(tmp)
    """
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(21, "is a directory, not a file", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(out: str | Path, text: str) -> Path:
    """Write a text file (UTF-8) through atomic_path."""
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


__all__ = ["atomic_path", "write_text"]
