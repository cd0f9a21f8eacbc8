"""Benchmark of byte-level BPE training: against minbpe (tiny Shakespeare, vocab 512) and HF tokenizers (vocab 8192).

    python bench/bpe_train.py --minbpe /tmp/minbpe --data /tmp/shakespeare_complete.txt

(a) tiny Shakespeare at vocab 512, in process, GPT-4 split pattern for both (minbpe's default), against
    minbpe's RegexTokenizer, found via --minbpe or $MINBPE_DIR (skipped when absent; never vendored).
(b) the text given by --data (Shakespeare's complete works, ~5 MB) at vocab 8192, whole process against
    whole process: `tokenizers` BpeTrainer with a ByteLevel pre-tokenizer, GPT-2 split pattern for both.
Figures are medians; CPU seconds are given too, since wall time on a shared machine is noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinygpt.tokenizers import ByteBPETokenizer  # noqa: E402
from tinygpt.tokenizers.interop import bytes_to_unicode  # noqa: E402

TINY = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

OURS = """
import sys
from tinygpt.tokenizers import ByteBPETokenizer
text = open(sys.argv[1], encoding="utf-8").read()
ByteBPETokenizer.train(text, int(sys.argv[2]), pattern="gpt2").save(sys.argv[3])
"""
HF = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
trainer = trainers.BpeTrainer(vocab_size=int(sys.argv[2]), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train([sys.argv[1]], trainer)
tok.save(sys.argv[3])
"""


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_process(code: str, *args: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child, all threads) of `python -c code args`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_minbpe(minbpe_dir: Path | None, repeats: int, minbpe_repeats: int) -> None:
    text = TINY.read_text(encoding="utf-8")
    print(f"(a) {TINY.name}, {len(text.encode()):,} bytes, vocab 512, GPT-4 split pattern, in process")
    ours = [timed(lambda: ByteBPETokenizer.train(text, 512, pattern="gpt4")) for _ in range(repeats)]
    wall, cpu = statistics.median(t[0] for t in ours), statistics.median(t[1] for t in ours)
    print(f"    tinygpt ByteBPETokenizer: {wall:7.3f} s wall, {cpu:7.3f} s CPU (median of {repeats})")
    if minbpe_dir is None or not (minbpe_dir / "minbpe" / "regex.py").exists():
        print("    minbpe: skipped (pass --minbpe DIR or set MINBPE_DIR to a minbpe checkout)")
        return
    sys.path.insert(0, str(minbpe_dir))
    from minbpe import RegexTokenizer

    def train_minbpe():
        peer = RegexTokenizer()  # GPT-4 pattern by default
        peer.train(text, 512)
        return peer

    peer_runs = [timed(train_minbpe) for _ in range(minbpe_repeats)]
    peer_wall, peer_cpu = statistics.median(t[0] for t in peer_runs), statistics.median(t[1] for t in peer_runs)
    print(f"    minbpe RegexTokenizer:    {peer_wall:7.3f} s wall, {peer_cpu:7.3f} s CPU (median of {minbpe_repeats})")
    print(f"    speed-up: {peer_wall / wall:.0f}x wall, {peer_cpu / cpu:.0f}x CPU")
    # minbpe breaks count ties by first occurrence, we by smallest pair: the merge lists agree up to the first tie
    peer_merges = sorted(peer_runs[0][2].merges, key=peer_runs[0][2].merges.get)
    same = next((k for k, (a, b) in enumerate(zip(ours[0][2].merges, peer_merges)) if a != b), len(peer_merges))
    print(f"    merges identical to minbpe's: first {same} of {len(peer_merges)}")


def bench_hf(data: Path, vocab_size: int, repeats: int) -> None:
    print(f"(b) {data}, {data.stat().st_size:,} bytes, vocab {vocab_size}, GPT-2 split pattern, whole process")
    try:
        import tokenizers
    except ImportError:
        print("    tokenizers not installed: skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ours_file, hf_file = str(Path(tmp) / "ours.json"), str(Path(tmp) / "hf.json")
        results = {"tinygpt": [], "hf": []}
        for _ in range(repeats):  # interleaved, so that load changes hit both alike
            results["tinygpt"].append(run_process(OURS, str(data), str(vocab_size), ours_file))
            results["hf"].append(run_process(HF, str(data), str(vocab_size), hf_file))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
        print(f"    tinygpt ByteBPETokenizer:      {med['tinygpt'][0]:6.2f} s wall, {med['tinygpt'][1]:6.2f} s CPU")
        print(f"    tokenizers {tokenizers.__version__} BpeTrainer: {med['hf'][0]:6.2f} s wall, "
              f"{med['hf'][1]:6.2f} s CPU"
              f" (median of {repeats}, {os.cpu_count()} cores)")
        print(f"    ratio tinygpt / tokenizers: {med['tinygpt'][0] / med['hf'][0]:.2f}x wall, "
              f"{med['tinygpt'][1] / med['hf'][1]:.2f}x CPU")
        ours = ByteBPETokenizer.from_dict(json.loads(Path(ours_file).read_text(encoding="utf-8")))
        u2b = {u: b for b, u in bytes_to_unicode().items()}
        hf_vocab = {bytes(u2b[c] for c in piece) for piece in json.loads(Path(hf_file).read_text())["model"]["vocab"]}
        shared = len(hf_vocab & set(ours.id_to_bytes.values()))
        print(f"    vocabularies: {shared} of {len(hf_vocab)} tokens in common (ties are broken differently)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minbpe", type=Path, default=os.environ.get("MINBPE_DIR"), help="minbpe checkout")
    parser.add_argument("--data", type=Path, default=Path("/tmp/shakespeare_complete.txt"), help="text for (b)")
    parser.add_argument("--vocab_size", type=int, default=8192, help="vocabulary size for (b)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minbpe_repeats", type=int, default=1, help="minbpe takes about a minute per run")
    args = parser.parse_args()
    minbpe_dir = Path(args.minbpe) if args.minbpe else None
    bench_minbpe(minbpe_dir, args.repeats, args.minbpe_repeats)
    if args.data.exists():
        bench_hf(args.data, args.vocab_size, args.repeats)
    else:
        print(f"(b) skipped: {args.data} not found (see bench/bpe_encode.py's docstring for how to build it)")


if __name__ == "__main__":
    main()
