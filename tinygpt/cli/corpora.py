"""The `tinygpt corpora` subcommand: lists the named corpora `--data` accepts (printing only)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinygpt.data.corpora import list_corpora


def add_corpora_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `corpora [--json]`; it sets args.func(args)."""
    parser = subparsers.add_parser(
        "corpora", help="list the named corpora that --data accepts (shakespeare, poetry, ...)",
        description="List the named corpora that --data accepts: size, whether cached, source and license. "
                    "A corpus is fetched, checksum-verified and cached the first time it is used.")
    parser.add_argument("--json", action="store_true", help="print a JSON list (with descriptions and credits)")
    parser.set_defaults(func=cmd_corpora)
    return parser


def _size(row: dict) -> str:
    mb = row["bytes"] / 1e6
    text = f"{mb:.1f} MB" if mb >= 0.1 else f"{row['bytes'] / 1e3:.0f} kB"
    return ("~" if row["approximate"] else "") + text


def cmd_corpora(args: argparse.Namespace) -> int:
    rows = list_corpora()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("name", "size", "cached", "source", "license")]
    table += [(r["name"], _size(r), "yes" if r["cached"] else "no", r["source"], r["license"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    print(f"\nuse one with `tinygpt train --data NAME`; the cache is {Path(rows[0]['path']).parent}")
    return 0
