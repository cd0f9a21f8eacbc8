"""The `tinygpt tokenizer` subcommands (train, encode, export, stats): argument parsing and printing only."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tinygpt.cli.args import path_arg
from tinygpt.data.text import load_text
from tinygpt.tokenizers import ByteBPETokenizer, load_tokenizer
from tinygpt.tokenizers.bpe import PATTERNS
from tinygpt.tokenizers.interop import EXPORTERS, export
from tinygpt.tokenizers.stats import tokenizer_stats


def add_tokenizer_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `tokenizer {train,encode,export,stats}`; each subcommand sets args.func(args)."""
    parser = subparsers.add_parser("tokenizer", help="train, inspect and export byte-level BPE tokenizers",
                                   description="Train, inspect and export byte-level BPE tokenizers.")
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a byte-level BPE tokenizer on a UTF-8 text file")
    p.add_argument("--data", required=True, help="a UTF-8 text file, a folder of .txt files, or a corpus name")
    p.add_argument("--vocab_size", type=int, required=True, help="256 bytes + merges + special tokens")
    p.add_argument("--out", required=True, type=path_arg, help="tokenizer JSON file to write")
    p.add_argument("--pattern", default="gpt2",
                   help=f"pre-tokenization split: {' or '.join(PATTERNS)} (default gpt2), or a regex")
    p.add_argument("--special", nargs="*", default=[], metavar="TOKEN", help="special tokens, e.g. '<|endoftext|>'")
    p.add_argument("--vocab_out", help="also write the readable vocabulary (id, piece, merge) to this file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("encode", help="show the ids and pieces of a text")
    p.add_argument("tokenizer", help="tokenizer JSON file")
    p.add_argument("--text", required=True, help="text to encode")
    p.add_argument("--allow_special", action="store_true", help="encode special-token strings as special tokens")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("export", help="write the tokenizer in another library's format")
    p.add_argument("tokenizer", help="tokenizer JSON file")
    p.add_argument("--format", required=True, choices=list(EXPORTERS),
                   help="hf: tokenizer.json; tiktoken: .tiktoken ranks file; gpt2: folder with vocab.json + merges.txt")
    p.add_argument("--out", required=True, type=path_arg, help="file (or folder for gpt2) to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="bytes per token, vocabulary usage and the longest tokens on a text")
    p.add_argument("tokenizer", help="tokenizer JSON file")
    p.add_argument("--data", required=True, help="a UTF-8 text file, a folder of .txt files, or a corpus name")
    p.add_argument("--top", type=int, default=10, help="how many tokens to list (default 10)")
    p.set_defaults(func=cmd_stats)
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    if Path(args.out).is_dir():  # before the (possibly long) training
        raise IsADirectoryError(21, "is a directory, not a file", args.out)
    _, text = load_text(args.data)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # created on the first merge, so that errors and chunk counting come before any bar
            bar = tqdm(total=total, unit="merge", desc="merges", file=sys.stderr)
        bar.update(done - bar.n)

    start = time.perf_counter()
    try:
        tok = ByteBPETokenizer.train(text, args.vocab_size, pattern=args.pattern, special_tokens=args.special,
                                     progress=progress)
    finally:
        if bar is not None:
            bar.close()
    tok.save(args.out)
    if args.vocab_out:
        tok.save_vocab(args.vocab_out)
    print(f"trained {tok!r} ({len(tok.merges)} merges, pattern {tok.pattern}) on {len(text):,} characters "
          f"in {time.perf_counter() - start:.1f}s -> {args.out}")


def cmd_encode(args: argparse.Namespace) -> None:
    tok = load_tokenizer(args.tokenizer)
    if isinstance(tok, ByteBPETokenizer):
        ids = tok.encode(args.text, allowed_special="all" if args.allow_special else "none")
    else:
        ids = tok.encode(args.text)
    print(f"{len(ids)} tokens")
    print("ids:    " + " ".join(map(str, ids)))
    print("pieces: " + " ".join(f"[{tok.id_to_piece(i)}]" for i in ids))


def cmd_export(args: argparse.Namespace) -> None:
    export(load_tokenizer(args.tokenizer), args.format, args.out)
    print(f"wrote {args.format} export to {args.out}")


def cmd_stats(args: argparse.Namespace) -> None:
    tok = load_tokenizer(args.tokenizer)
    s = tokenizer_stats(tok, load_text(args.data)[1], top=args.top)
    print(f"{s.n_bytes:,} bytes -> {s.n_tokens:,} tokens: {s.bytes_per_token:.3f} bytes per token")
    print(f"vocabulary used: {s.vocab_used:,} of {s.vocab_size:,} ({100 * s.vocab_usage:.1f}%)")
    print("longest tokens (id, bytes, piece):")
    for i, piece, n in s.longest:
        print(f"  {i:>7} {n:>4}  [{piece}]")
    print("most used tokens (id, count, piece):")
    for i, piece, count in s.most_common:
        print(f"  {i:>7} {count:>9,}  [{piece}]")
