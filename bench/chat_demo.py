"""The assistant demo over several seeds, with and without the loss mask: held-out accuracy and training time.

    python bench/chat_demo.py --seeds 0 1 2 --out /tmp/chat-bench            # the mask (the default recipe)
    python bench/chat_demo.py --seeds 0 1 2 --chat_loss all --out /tmp/nomask  # the loss on every token

Each seed runs `tinygpt demo chat` in process (pretraining, then fine-tuning) and prints one line: training
seconds of each stage, then the exact-match accuracy of greedy replies on the held-out conversations, first
turns and follow-ups, and per question form. The median over seeds ends the table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from tinygpt.recipes.assistant import train_demo
from machine import cpu_name  # bench/machine.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--chat_loss", choices=("assistant", "all"), default="assistant")
    p.add_argument("--out", default="/tmp/tinygpt-chat-bench")
    p.add_argument("--json", help="also write every result to this file")
    args = p.parse_args()
    import torch
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; loss on: {args.chat_loss}")
    rows = []
    for seed in args.seeds:
        t = time.perf_counter()
        rep = train_demo(f"{args.out}/seed{seed}", seed=seed, loss_on=args.chat_loss, overwrite=True)
        kind, form = rep["heldout"]["kind"], rep["heldout"]["form"]
        row = {"seed": seed, "base_s": rep["train_seconds"]["base"], "sft_s": rep["train_seconds"]["assistant"],
               "wall_s": time.perf_counter() - t, "first": kind["first"]["accuracy"],
               "followup": kind["followup"]["accuracy"], "forms": {k: v["accuracy"] for k, v in form.items()}}
        rows.append(row)
        forms = "  ".join(f"{k} {v:.1%}" for k, v in row["forms"].items())
        print(f"seed {seed}: train {row['base_s']:.0f} s + {row['sft_s']:.0f} s; held-out first turns "
              f"{row['first']:.1%} ({kind['first']['total']}), follow-ups {row['followup']:.1%} "
              f"({kind['followup']['total']}) | {forms}", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("base_s", "sft_s", "first", "followup")}
    print(f"median over {len(rows)} seeds: train {med['base_s']:.0f} s + {med['sft_s']:.0f} s; first turns "
          f"{med['first']:.1%}, follow-ups {med['followup']:.1%}; worst first {min(r['first'] for r in rows):.1%}, "
          f"worst follow-up {min(r['followup'] for r in rows):.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
