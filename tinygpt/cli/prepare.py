"""The `tinygpt prepare` subcommand and the progress bars of preparing: argument parsing and printing only."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tqdm import tqdm

from tinygpt.cli.args import finite_float, path_arg, positive_int
from tinygpt.cli.progress import say
from tinygpt.data.corpora import resolve_data
from tinygpt.data.prepare import BPE_SAMPLE_CHARS, prepare, unknown_note
from tinygpt.data.prepared_cache import AUTO_PREPARE_BYTES

UNITS = {"reading": "B", "vocabulary": "char", "counting": "char", "merges": "merge", "encoding": "char"}


def add_prepare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `prepare`; it sets args.func(args)."""
    p = subparsers.add_parser(
        "prepare", help="tokenize a corpus once into a directory that tinygpt train reads memory-mapped",
        description="Tokenize a corpus once, in parallel, into DATA_DIR: train.bin and val.bin (the ids of each "
                    "split), tokenizer.json and meta.json. Then `tinygpt train --data DATA_DIR` starts at once "
                    "and holds none of it in memory. The split is train's: the first (1 - val_fraction) of the "
                    "text's characters train, the rest validate; a folder, JSONL or Parquet source is one "
                    "text, its documents joined by newlines. A BPE tokenizer learns from chunk counts of the "
                    f"training split, streamed: of the whole split up to {BPE_SAMPLE_CHARS >> 20} Mi characters, "
                    f"beyond that of evenly spread pieces of it, about {BPE_SAMPLE_CHARS >> 20} Mi characters "
                    f"in all, so memory stays bounded. (`tinygpt train --data` prepares texts of "
                    f"{AUTO_PREPARE_BYTES >> 20} MiB or more by itself, in the cache.)")
    p.add_argument("--data", required=True,
                   help="a UTF-8 text file, a JSONL or Parquet file, a folder of .txt/.jsonl/.parquet files, "
                        "or a corpus name")
    p.add_argument("--out", required=True, type=path_arg, metavar="DATA_DIR",
                   help="the directory to write (must not exist yet)")
    p.add_argument("--tokenizer", default="char",
                   help="char (default), bpe (trained on the training split), or a tokenizer .json file")
    p.add_argument("--vocab_size", type=positive_int, default=None, help="BPE vocabulary size (default 4096)")
    p.add_argument("--text_field", default="text", help="the field of each JSONL record / Parquet column to read "
                                                        "(default: text)")
    p.add_argument("--val_fraction", type=finite_float, default=0.1,
                   help="the share of the text, at its end, kept for validation (default 0.1)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)
    return p


def cmd_prepare(args: argparse.Namespace) -> int:
    path = resolve_data(args.data, progress=say)  # a corpus downloaded now says so
    start = time.perf_counter()
    with ProgressBars(args.quiet) as bars:
        meta = prepare(path, args.out, args.tokenizer, args.vocab_size, text_field=args.text_field,
                       val_fraction=args.val_fraction, workers=args.workers, progress=bars)
    secs = time.perf_counter() - start
    text, tok, tokens = meta["text"], meta["tokenizer"], meta["tokens"]
    print(f"prepared {path} ({text['bytes'] / 1e6:,.1f} MB of text) in {secs:.1f} s "
          f"({text['bytes'] / 1e6 / secs:,.1f} MB/s): {tokens['train']:,} training and {tokens['val']:,} "
          f"validation tokens ({meta['dtype']}); tokenizer: {tok['how']}")
    print(f"train on it with: tinygpt train --data {args.out} --out runs/NAME")
    unknown = unknown_note(meta)
    if unknown:
        print(f"warning: {unknown}", file=sys.stderr)
    return 0


class ProgressBars:
    """progress(stage, done, total) for prepare.py: one tqdm bar per stage, on stderr (none when quiet)."""

    def __init__(self, quiet: bool = False):
        self.quiet, self.stage, self.bar = quiet, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            unit = UNITS.get(stage, "it")
            self.bar = tqdm(total=total, desc=stage, unit=unit, unit_scale=unit != "merge", dynamic_ncols=True,
                            file=sys.stderr, leave=False, delay=0.5)  # quick stages draw nothing
        assert self.bar is not None
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
