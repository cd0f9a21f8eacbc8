"""The CPU speedrun: `tinygpt train --preset speedrun_cpu` on tinyshakespeare, then the exact validation loss.

    python bench/speedrun.py --data ../shared/data/tinyshakespeare.txt --out /tmp/speedrun [-- extra train flags]

Runs the command a user would type, as a subprocess, then `tinygpt eval` on the whole validation split (every
character predicted once) and `tinygpt sample`. Prints the machine, the training seconds (the run's own clock,
start-up and evaluations included), when the periodic evaluations first reached val loss 1.55 and 1.47, the
exact final loss and a sample. Measure on an idle machine: the figure is wall-clock time on the cores given.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py

GOALS = (1.55, 1.47)  # the speedrun's bar, and nanoGPT's shakespeare_char figure on an A100


def tinygpt(*args: str, capture: bool = True) -> str:
    r = subprocess.run([sys.executable, "-m", "tinygpt", *args], capture_output=capture, text=True)
    if r.returncode != 0:
        raise SystemExit(f"tinygpt {args[0]} failed: {(r.stderr or '')[-2000:]}")
    return r.stdout or ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    p.add_argument("--out", default="/tmp/tinygpt-speedrun")
    p.add_argument("extra", nargs="*", help="more train flags after --, e.g. -- --seed=1")
    args = p.parse_args()
    import torch
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    tinygpt("train", "--preset", "speedrun_cpu", "--data", args.data, "--out", args.out, "--overwrite", "--quiet",
            *args.extra, capture=False)
    wall = time.perf_counter() - t0
    lines = [json.loads(ln) for ln in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    evals = [ln for ln in lines if "val_loss" in ln]
    train_s = max(ln["elapsed_s"] for ln in lines)
    dtype = json.loads((Path(args.out) / "latest" / "config.json").read_text()).get("dtype", "")
    print(f"training: {lines[-1]['step']} steps in {train_s:.0f} s ({train_s / 60:.1f} min; the command {wall:.0f} s "
          f"with start-up), {dtype}")
    for goal in GOALS:
        hit = next((e for e in evals if e["val_loss"] <= goal), None)
        print(f"periodic val loss <= {goal}: " + (f"step {hit['step']}, {hit['elapsed_s']:.0f} s" if hit else "not reached"))
    for which in ("latest", "best"):
        res = json.loads(tinygpt("eval", args.out, "--checkpoint", which, "--json"))
        print(f"exact val loss ({which} checkpoint, whole validation split): {res['loss']:.4f} "
              f"({res.get('bits_per_char', float('nan')):.3f} bits per character)")
    print("sample:\n" + tinygpt("sample", args.out, "--prompt", "ROMEO:", "--max_new_tokens", "300", "--seed", "0"))


if __name__ == "__main__":
    main()
