"""Writing files safely: the old file stays whole until the new one is complete, and errors name the user's path.

Every file tinygpt writes (tokenizers, corpora, images, reports, exports) goes through `atomic_path`: a
temporary file beside the target (created with the usual 0666 & ~umask mode, like any other new file),
flushed to disk, then renamed over the target in one step. A crash, a full disk or Ctrl-C leaves either
the old file or the new one, never half of one, and never a stray temporary file. Folders written as a
whole (an imported model, a Hugging Face export) go through `atomic_dir`: built beside the target, renamed
into place once complete.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `out` (same suffix, so writers infer the format); on success it
    replaces `out` in one rename, on any error it is deleted and `out` is left as it was. An OSError raised
    while writing names `out`, not the temporary file.

        with atomic_path("plot.png") as tmp:
            fig.savefig(tmp)
    """
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(21, "is a directory, not a file", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.stem}-{os.getpid()}-{secrets.token_hex(4)}{out.suffix}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode honours the umask
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename and Path(e.filename) == tmp:  # the user should see their own path
            raise type(e)(e.errno, e.strerror, str(out)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `out`; on success it becomes `out` in one rename, on any error
    it is deleted. `out` must not exist yet, or be an empty directory: nothing is ever overwritten.

        with atomic_dir("exported") as tmp:
            (tmp / "config.json").write_text("{}")
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(errno.EEXIST, "already exists and is not empty", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if out.is_dir():
            out.rmdir()  # empty (checked above); a file appearing there since makes this fail, as it should
        os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename and Path(e.filename).is_relative_to(tmp):  # the user should see their own path
            raise type(e)(e.errno, e.strerror, str(out)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(out: str | Path, data: bytes) -> Path:
    """Write a file through atomic_path."""
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(out)


def write_text(out: str | Path, text: str) -> Path:
    """Write a UTF-8 text file through atomic_path."""
    return write_bytes(out, text.encode("utf-8"))


__all__ = ["atomic_path", "atomic_dir", "write_bytes", "write_text"]
