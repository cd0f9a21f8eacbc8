"""Benchmark of `tinygpt prepare` on a large text: MB/s, peak memory of all its processes, and how fast
`tinygpt train` starts on the result (from the prepared directory, and from the text through the cache).

    python bench/prepare.py --mb 2048 --tokenizer char
    python bench/prepare.py --mb 2048 --tokenizer bpe --vocab_size 1024
    python bench/prepare.py --mb 100 --tokenizer bpe --vocab_size 1024 --no_cache_runs   # a quick look

The text is tinyshakespeare repeated: each copy has its paragraphs shuffled and about one letter in 200
replaced by a random one, so that, like real text, it keeps meeting words it has not seen (BPE's chunk
cache misses and its training counts grow as they would). It is written to --dir (default: the system's
temporary folder) and deleted at the end, with everything else the benchmark wrote.

Memory is sampled every 200 ms over the process and its children (the workers): the peak of the summed
RSS (an upper bound: forked workers share their parent's pages, each counted again) and of the summed
PSS (shared pages divided among the processes sharing them: the memory the whole job really holds).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--max_iters=1",
        "--eval_iters=1", "--eval_interval=1", "--device=cpu", "--dtype=float32", "--quiet"]


def make_text(path: Path, mb: int, seed: int = 0) -> None:
    """About `mb` MB of perturbed tinyshakespeare (see the module docstring), written in one pass."""
    rng = np.random.default_rng(seed)
    paragraphs = [p.encode("utf-8") for p in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")]
    lower = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    target, written = mb * 1_000_000, 0
    with open(path, "wb") as f:
        while written < target:
            copy = np.frombuffer(b"\n\n".join(paragraphs[i] for i in rng.permutation(len(paragraphs))) + b"\n\n",
                                 dtype=np.uint8).copy()
            letters = np.flatnonzero((copy >= ord("a")) & (copy <= ord("z")))
            hit = letters[rng.random(len(letters)) < 1 / 200]
            copy[hit] = rng.choice(lower, len(hit))
            data = copy.tobytes()[:target - written]
            f.write(data)
            written += len(data)


def tree(root: int) -> list[int]:
    """root and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; zeros once it is gone."""
    try:
        rss = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if ln.startswith("VmRSS"))
        pss = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if ln.startswith("Pss:"))
        return rss, pss
    except (OSError, StopIteration):
        return 0, 0


def run(args: list[str], env: dict[str, str], memory: bool = True) -> dict[str, Any]:
    """Run `python -m tinygpt ARGS`: its wall time, the peaks of its processes' summed RSS and PSS (GB), and
    when training started (its "training on ..." line on stderr), seconds after the command was started.
    memory=False samples nothing: reading /proc/PID/smaps_rollup takes the process's memory-map lock and
    slows down a start-up (imports map many files) measurably, so start times are taken without it."""
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started: list[float] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("training on") and not started:
                started.append(time.perf_counter() - t0)
            lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    rss = pss = 0
    while proc.poll() is None:
        if memory:
            sizes = [memory_kb(p) for p in tree(proc.pid)]
            rss, pss = max(rss, sum(s[0] for s in sizes)), max(pss, sum(s[1] for s in sizes))
        time.sleep(0.2 if memory else 0.01)
    secs = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    reader.join()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its workers, once they are waited for
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    err = "".join(lines)
    if proc.returncode:
        sys.exit(f"tinygpt {' '.join(args)} failed (exit {proc.returncode}):\n{err}")
    return {"secs": secs, "cpu": cpu, "start": started[0] if started else None, "rss_gb": rss / 1e6,
            "pss_gb": pss / 1e6, "stdout": out, "stderr": err}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=2048, help="size of the text in MB (default 2048)")
    ap.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    ap.add_argument("--vocab_size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--dir", default=None, help="where to write the text and the results (default: the system's)")
    ap.add_argument("--no_cache_runs", action="store_true",
                    help="skip preparing through `tinygpt train --data TEXT` (the cache) and its second start")
    args = ap.parse_args()
    tok = ["--tokenizer", args.tokenizer] + (["--vocab_size", str(args.vocab_size)] if args.tokenizer == "bpe" else [])
    workers = ["--workers", str(args.workers)] if args.workers else []
    tmp = Path(tempfile.mkdtemp(prefix="tinygpt-prepare-", dir=args.dir))
    env = {**os.environ, "TINYGPT_CACHE": str(tmp / "cache")}
    try:
        text = tmp / "big.txt"
        t0 = time.perf_counter()
        make_text(text, args.mb)
        mb = text.stat().st_size / 1e6
        print(f"made {text} ({mb:,.0f} MB) in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores")

        load = os.getloadavg()[0]
        r = run(["prepare", "--data", str(text), "--out", str(tmp / "data"), *tok, *workers, "--quiet"], env)
        meta = json.loads((tmp / "data" / "meta.json").read_text())
        print(f"prepare ({args.tokenizer}{', vocab ' + str(args.vocab_size) if args.tokenizer == 'bpe' else ''}): "
              f"{r['secs']:.1f} s, {mb / r['secs']:.1f} MB/s ({r['cpu']:.0f} CPU-seconds in all processes); "
              f"peak memory {r['pss_gb']:.2f} GB PSS ({r['rss_gb']:.2f} GB summed RSS); "
              f"{meta['tokens']['train'] + meta['tokens']['val']:,} tokens")
        print(f"  load average just before: {load:.1f} (other processes competing for the cores)")
        print(f"  tokenizer: {meta['tokenizer']['how']}")
        r = run(["train", "--data", str(tmp / "data"), "--out", str(tmp / "run-dir"), *TINY], env, memory=False)
        print(f"train --data DATA_DIR: training started after {r['start']:.1f} s; one step, start to exit: "
              f"{r['secs']:.1f} s")
        shutil.rmtree(tmp / "data")

        if not args.no_cache_runs:
            r = run(["train", "--data", str(text), "--out", str(tmp / "run-1"), *tok, *TINY], env)
            print(f"train --data TEXT, first start (prepares into the cache), one step: {r['secs']:.1f} s "
                  f"({mb / r['secs']:.1f} MB/s in all; peak {r['pss_gb']:.2f} GB PSS, {r['rss_gb']:.2f} GB RSS)")
            r = run(["train", "--data", str(text), "--out", str(tmp / "run-2"), *tok, *TINY], env, memory=False)
            note = next((ln for ln in r["stderr"].splitlines() if "prepared copy" in ln), "")
            print(f"train --data TEXT, second start: training started after {r['start']:.1f} s; one step, start to "
                  f"exit: {r['secs']:.1f} s ({note.strip()})")
        r = run(["--version"], env, memory=False)
        print(f"for comparison, `tinygpt --version` (Python and torch starting): {r['secs']:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
