"""The `tinygpt demo` (the calculator) and `tinygpt ladder` commands: parse, call the recipe, print.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinygpt.cli.args import CLIError, config_overrides
from tinygpt.cli.eval import accuracy_table
from tinygpt.cli.progress import ProgressHooks
from tinygpt.config import parse_value


def cmd_demo(args: argparse.Namespace) -> int:
    from tinygpt.recipes.demo import report, train_calculator
    from tinygpt.training.run import Run

    if args.which == "chat":
        overrides = config_overrides(args)
        seed = parse_value("seed", overrides.pop("seed", 0))
        given = [f"--{k}" for k in overrides] + (["--no_early_stop"] if args.no_early_stop else [])
        if given:
            raise CLIError(f"tinygpt demo chat has its own recipe; drop {', '.join(given)} (it takes --out, --seed, "
                           f"--chat_loss, --overwrite and --quiet)")
        from tinygpt.cli.chat import cmd_demo_chat
        return cmd_demo_chat(args, seed)
    if args.chat_loss is not None:
        raise CLIError("--chat_loss applies to tinygpt demo chat")

    out = Path(args.out) if args.out else Path("runs/calculator")
    if args.out is None and not args.overwrite:  # rerunning the default demo never clobbers an earlier one
        n = 2
        while Run(out).holds_run():
            out = Path(f"runs/calculator-{n}")
            n += 1
    overrides = config_overrides(args)
    print(f"tinygpt demo: a GPT learns arithmetic in English words (\"seven times eight\" -> \"fifty six\"),\n"
          f"trained from scratch; it is then tested on questions it never saw. Run directory: {out}", file=sys.stderr)
    hooks = ProgressHooks(quiet=args.quiet)
    result = train_calculator(out, overrides, hooks=hooks, overwrite=args.overwrite,
                              finish_early=not args.no_early_stop)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by}; the run so far is in {out}", file=sys.stderr)
        return 130
    if result.finished_early:
        print(f"finished at step {result.step}: {result.finished_early}", file=sys.stderr)
    rep = report(out)
    print()
    print("Exact-match accuracy of greedy answers:")
    print(accuracy_table(rep))
    print()
    print("Questions it never saw in training:")
    wq = max((len(ex["question"]) for ex in rep["examples"]), default=0)
    wa = max((len(ex["answer"]) for ex in rep["examples"]), default=0)
    for ex in rep["examples"]:
        mark = "ok" if ex["correct"] else f"wrong, expected {ex['expected']}"
        print(f"  {ex['question']:<{wq}}  ->  {ex['answer']:<{wa}}  ({mark})")
    secs = rep.get("train_seconds")
    if secs:
        print(f"\ntraining took {secs:.0f} s; the run is saved in {out}")
    print(f"""
Next, try:
  tinygpt sample {out} --prompt "two plus three"          # ask it anything in its range
  tinygpt eval {out}                                      # the accuracy table again
  tinygpt plot {out} --out calculator.png                  # its loss curves
  tinygpt train --data shakespeare --out runs/shakespeare   # a character model of Shakespeare""")
    return 0


def cmd_ladder(args: argparse.Namespace) -> int:
    from tinygpt.data.corpora import resolve_data
    from tinygpt.data.text import read_text
    from tinygpt.recipes.ladder import MODERN_RUNGS, RUNGS, format_table, run_ladder

    text = read_text(resolve_data(args.data))
    rungs = args.rungs.split(",") if args.rungs else list(MODERN_RUNGS if args.modern else RUNGS)
    overrides = config_overrides(args)
    out = Path(args.out or ("runs/ladder-modern" if args.modern else "runs/ladder"))

    def hooks(rung: str) -> ProgressHooks:
        print(f"\n== {rung} ==", file=sys.stderr)
        return ProgressHooks(quiet=args.quiet)

    rows = run_ladder(text, out, overrides, rungs, overwrite=args.overwrite, hooks=hooks)
    print()
    print(format_table(rows))
    from tinygpt.files import write_text
    write_text(out / "ladder.json", json.dumps(rows, indent=1))
    try:
        from tinygpt.inspect.plot import plot_runs
        png = plot_runs([out / r for r in rungs], out / "ladder.png", rungs,
                        title="The modern ladder: GPT-2, then one piece added per rung" if args.modern
                        else "The model ladder: validation loss of each rung")
        print(f"\nvalidation curves: {png}")
    except ImportError:
        print("\n(no plot: pip install 'tinygpt[plot]' for the curves)")
    return 0
