"""The text of a data source, read as a stream of blocks: a UTF-8 text file, the text field of each record of
a JSONL or Parquet file, or a folder of such files.

A source is one text: its documents joined by newlines, in order (a text file is one document; a folder's
files are taken sorted by path, as `sorted(Path.rglob(...))` orders them). `read_text` joins the stream in
memory; `tinygpt prepare` reads it block by block, so no corpus has to fit in memory at once. Every
problem with the input is a one-line DataError naming the file, and for JSONL the line.
"""
from __future__ import annotations

import codecs
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from tinygpt.config import SettingText
from tinygpt.tokenizers.bpe import well_formed

KINDS = (".txt", ".jsonl", ".parquet")  # what a folder contributes; a single file of any other name is text
BLOCK_BYTES = 4 << 20  # what is read at a time
BINARY_PROBE = 1 << 20  # a NUL byte in a text file's first MiB means it is not text


class DataError(ValueError):
    """Unusable training data; the message is one line, fit for the CLI."""


def source_files(path: str | Path) -> list[Path]:
    """The files a source reads: the file itself, or a folder's .txt, .jsonl and .parquet files, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in KINDS and p.is_file())
        if not files:
            raise DataError(f"folder {path} holds no .txt, .jsonl or .parquet files")
        return files
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    return [path]


def read_text(path: str | Path, text_field: str = "text") -> str:
    """The whole text of a source in memory (see the module docstring for what that text is)."""
    return "".join(TextStream(path, text_field).blocks())


class TextStream:
    """The text of the source at `path`, block by block (blocks of up to a few MiB, cut anywhere, even
    inside a document): "".join(stream.blocks()) == read_text(path).

    blocks(hashes) can also fill `hashes` with each file's size and the sha256 of its bytes as read.
    """

    def __init__(self, path: str | Path, text_field: str = "text"):
        self.path = Path(path)
        self.text_field = text_field
        self.files = source_files(self.path)

    def blocks(self, hashes: dict[Path, dict[str, Any]] | None = None) -> Iterator[str]:
        for i, f in enumerate(self.files):
            hasher = hashlib.sha256() if hashes is not None else None
            if i:
                yield "\n"
            if f.suffix == ".jsonl":
                yield from _jsonl_blocks(f, self.text_field, hasher)
            elif f.suffix == ".parquet":
                yield from _parquet_blocks(f, self.text_field)
                if hasher is not None:
                    with open(f, "rb") as fh:
                        while chunk := fh.read(BLOCK_BYTES):
                            hasher.update(chunk)
            else:
                yield from _text_blocks(f, hasher)
            if hashes is not None:
                hashes[f] = {"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": hasher.hexdigest()}

    def size(self) -> int:
        """The bytes of its files (not of its text: JSONL and Parquet files hold more than the text)."""
        return sum(f.stat().st_size for f in self.files)


def _text_blocks(path: Path, hasher: Any) -> Iterator[str]:
    """A UTF-8 text file, decoded as it is read; a byte-order mark at its start is not text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, seen_text = 0, False
    with open(path, "rb") as f:
        while True:
            raw = f.read(BLOCK_BYTES)
            final = not raw
            if hasher is not None:
                hasher.update(raw)
            if offset < BINARY_PROBE and b"\x00" in raw[:BINARY_PROBE - offset]:
                raise DataError(f"data file {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
            if not seen_text:
                seen_text = bool(raw.strip())
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final)
            except UnicodeDecodeError as e:
                raise DataError(f"data file {path} is not valid UTF-8 (bad byte at offset "
                                f"{offset - pending + e.start})") from None
            if offset == 0:
                text = text.removeprefix("\ufeff")
            offset += len(raw)
            if final and not seen_text:
                raise DataError(f"data file {path} is empty")
            if text:
                yield text
            if final:
                return


def _jsonl_blocks(path: Path, field: str, hasher: Any) -> Iterator[str]:
    """The `field` of each record of a JSONL file (one JSON object per line; blank lines are skipped)."""
    batch: list[str] = []
    size, first = 0, True
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if hasher is not None:
                hasher.update(raw)
            if not raw.strip():
                continue
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            batch.append(_record_text(raw, path, lineno, field))
            size += len(batch[-1])
            if size >= BLOCK_BYTES:
                yield ("" if first else "\n") + "\n".join(batch)
                batch, size, first = [], 0, False
    if batch:
        yield ("" if first else "\n") + "\n".join(batch)
    elif first:
        raise DataError(f"data file {path} is empty (no JSON records)")


def _record_text(raw: bytes, path: Path, lineno: int, field: str) -> str:
    where = f"data file {path} line {lineno}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not valid UTF-8 (bad byte at column {e.start + 1})") from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where} is not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where} is not a JSON object with a {field!r} field")
    if field not in record:
        fields = ", ".join(map(repr, list(record)[:5])) or "no fields"
        raise DataError(SettingText(f"{where} has no {field!r} field (`text_field` names the field to read; this "
                                    f"record has {fields})", "text_field"))
    text = record[field]
    if not isinstance(text, str):
        raise DataError(f"{where}: the {field!r} field is {type(text).__name__}, not a string")
    return well_formed(text)  # a lone surrogate escape such as "\ud800" is no character: U+FFFD instead


def _parquet_blocks(path: Path, field: str) -> Iterator[str]:
    """The `field` column of a Parquet file, row by row (needs pyarrow, imported only here)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow: pip install 'tinygpt[parquet]'") from None
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"data file {path} is not a readable Parquet file ({str(e).splitlines()[0]})") from None
    schema = pf.schema_arrow
    if field not in schema.names:
        raise DataError(SettingText(f"data file {path} has no {field!r} column (`text_field` names the column to "
                                    f"read; its columns: {', '.join(schema.names[:8])})", "text_field"))
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"data file {path}: the {field!r} column holds {kind}, not strings")
    row, first = 0, True
    for batch in pf.iter_batches(batch_size=4096, columns=[field]):
        column = batch.column(0)
        if column.null_count:
            bad = row + next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
            raise DataError(f"data file {path} row {bad + 1}: the {field!r} field is empty (null)")
        row += len(column)
        if len(column):
            yield ("" if first else "\n") + "\n".join(column.to_pylist())
            first = False
    if first:
        raise DataError(f"data file {path} is empty (no rows)")


__all__ = ["DataError", "KINDS", "TextStream", "read_text", "source_files"]
