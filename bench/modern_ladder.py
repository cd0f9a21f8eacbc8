"""The modern ladder over several seeds: GPT-2, then one later piece added per rung, on one text and budget.

    python bench/modern_ladder.py --data ../shared/data/tinyshakespeare.txt --seeds 0 1 2 --out /tmp/modern-ladder

Each seed trains every rung of `tinygpt ladder --modern` (the ladder's own settings: the tiny_char model,
1000 steps; --max_iters changes the budget) into OUT/seed-S, and the table gives, per rung, the exact validation
loss of every seed, their mean, the change from the rung above and in how many seeds the added piece helped.
OUT/ladder.png plots the mean validation curve of every rung. Only the losses matter here, so the seeds may
run one thread each, side by side (OMP_NUM_THREADS=1 ... --seeds 0 & ...), and be summed up with --report.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tinygpt.data.text import read_text
from tinygpt.recipes.ladder import MODERN_RUNGS, run_ladder
from tinygpt.training.run import Run


def train_seeds(data: str, out: Path, seeds: list[int], max_iters: int | None) -> None:
    text = read_text(data)
    for seed in seeds:
        overrides = {"seed": seed, **({"max_iters": max_iters} if max_iters else {})}
        rows = run_ladder(text, out / f"seed-{seed}", overrides, MODERN_RUNGS, overwrite=True)
        (out / f"seed-{seed}" / "ladder.json").write_text(json.dumps(rows, indent=1))


def report(out: Path) -> str:
    runs = sorted(out.glob("seed-*/ladder.json"))
    if not runs:
        raise SystemExit(f"no seed-*/ladder.json under {out}")
    by_seed = {p.parent.name: {r["model"]: r for r in json.loads(p.read_text())} for p in runs}
    lines = [f"{'rung':<10}{'params':>9}  " + "".join(f"{s:>9}" for s in by_seed) + f"{'mean':>9}{'change':>9}  helped",
             "-" * (40 + 9 * len(by_seed))]
    previous: dict[str, float] | None = None
    for rung in MODERN_RUNGS:
        losses = {s: rows[rung]["val_loss"] for s, rows in by_seed.items() if rung in rows}
        if not losses:
            continue
        mean = statistics.mean(losses.values())
        params = next(rows[rung]["params"] for rows in by_seed.values() if rung in rows)
        cells = "".join(f"{losses[s]:>9.3f}" if s in losses else f"{'-':>9}" for s in by_seed)
        if previous:
            change = mean - statistics.mean(previous.values())
            helped = sum(losses[s] < previous[s] for s in losses if s in previous)
            tail = f"{change:>+9.3f}  {helped}/{len(losses)}"
        else:
            tail = f"{'':>9}"
        lines.append(f"{rung:<10}{params:>9,}  {cells}{mean:>9.3f}{tail}")
        previous = losses
    return "\n".join(lines)


def plot_mean_curves(out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for rung in MODERN_RUNGS:
        curves = []
        for seed_dir in sorted(out.glob("seed-*")):
            if (seed_dir / rung).is_dir():
                points = {m["step"]: m["val_loss"] for m in Run(seed_dir / rung).metrics() if "val_loss" in m}
                curves.append(points)
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        steps = [s for s in steps if s > 0]
        ax.plot(steps, [statistics.mean(c[s] for c in curves) for s in steps], label=rung)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation loss (mean of {len(list(out.glob('seed-*')))} seeds)")
    ax.set_title("The modern ladder: GPT-2, then one piece added per rung")
    ax.grid(alpha=0.3)
    ax.legend()
    png = out / "ladder.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    return png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max_iters", type=int, default=None, help="steps per rung (default: the ladder's 1000)")
    p.add_argument("--out", type=Path, default=Path("/tmp/tinygpt-modern-ladder"))
    p.add_argument("--report", action="store_true", help="only summarise what OUT already holds")
    args = p.parse_args()
    if not args.report:
        train_seeds(args.data, args.out, args.seeds, args.max_iters)
    print(report(args.out))
    print(f"\nplot: {plot_mean_curves(args.out)}")


if __name__ == "__main__":
    main()
