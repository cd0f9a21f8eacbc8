"""The `tinygpt demo` (the calculator) and `tinygpt ladder` commands: parse, call the recipe, print.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from tinygpt.cli.args import CLIError, add_config_flags, config_overrides, path_arg
from tinygpt.cli.chat import cmd_demo_chat
from tinygpt.cli.eval import accuracy_table
from tinygpt.cli.progress import ProgressHooks, say
from tinygpt.config import parse_value
from tinygpt.data.corpora import resolve_data
from tinygpt.data.text import read_text
from tinygpt.files import write_text
from tinygpt.inspect.plot import plot_runs
from tinygpt.recipes.demo import calculator_report, train_calculator
from tinygpt.recipes.ladder import MODERN_RUNGS, RUNGS, format_table, run_ladder
from tinygpt.training.run import Run


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `demo [calculator|chat]`; it sets args.func(args)."""
    d = subparsers.add_parser(
        "demo", help="the first run: train the calculator GPT (about 2 minutes on an idle 2-core CPU); "
                     "`demo chat`: pretrain and fine-tune an assistant (about 5 minutes there); each prints "
                     "its own estimate",
        description="calculator (default): train a 4-layer GPT to answer arithmetic questions in English words, "
                    "score it on questions it never saw, and save the run. chat: pretrain a GPT on text about "
                    "arithmetic, fine-tune it on conversations into an assistant, and compare the two on the same "
                    "questions. Either demo prints a time estimate once its first steps are timed; --max_iters N "
                    "cuts it to N steps in all (its warm-up and evaluations scale with it).")
    d.add_argument("which", nargs="?", choices=("calculator", "chat"), default="calculator",
                   help="which demo (default calculator)")
    d.add_argument("--out", default=None, type=path_arg,
                   help="run directory (default runs/calculator or runs/chat, or the next free one with -N)")
    d.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--no_early_stop", action="store_true",
                   help="train all max_iters steps (by default training ends once every sampled training "
                        "question is answered right)")
    d.add_argument("--chat_loss", choices=("assistant", "all"), default=None,
                   help="chat only: the loss on the assistant's replies (default) or on every token")
    add_config_flags(d, show_defaults=False)
    d.set_defaults(func=cmd_demo)
    return d


def add_ladder_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `ladder --data TEXT`; it sets args.func(args)."""
    la = subparsers.add_parser("ladder", help="train every rung of the model ladder on one text and compare",
                               description="bigram -> single head -> multi-head -> GPT, and the GPT without "
                                           "position embeddings, residuals, LayerNorm or MLP: same data, same "
                                           "budget.")
    la.add_argument("--data", required=True, help="a text file, folder or corpus name")
    la.add_argument("--out", type=path_arg,
                    help="directory for the rungs' runs (default runs/ladder, or runs/ladder-modern)")
    la.add_argument("--rungs", help="comma-separated subset of the rungs (default: all)")
    la.add_argument("--modern", action="store_true",
                    help="the modern ladder: GPT-2, then rotary, RMSNorm, SwiGLU, QK-norm, no biases, untied "
                         "embeddings and Muon added one at a time")
    la.add_argument("--overwrite", action="store_true", help="replace a ladder already in --out")
    la.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(la, show_defaults=False)
    la.set_defaults(func=cmd_ladder)
    return la


def cmd_demo(args: argparse.Namespace) -> int:
    if args.which == "chat":
        overrides = config_overrides(args)
        seed = parse_value("seed", overrides.pop("seed", 0))
        budget = overrides.pop("max_iters", None)  # the steps of both stages together; the recipe scales with it
        given = [f"--{k}" for k in overrides] + (["--no_early_stop"] if args.no_early_stop else [])
        if given:
            raise CLIError(f"tinygpt demo chat has its own recipe; drop {', '.join(given)} (it takes --out, --seed, "
                           f"--max_iters, --chat_loss, --overwrite and --quiet)")
        return cmd_demo_chat(args, seed, None if budget is None else parse_value("max_iters", budget))
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
    hooks = ProgressHooks(quiet=args.quiet, estimate_over=0)  # its cost, as soon as the first steps are timed
    result = train_calculator(out, overrides, hooks=hooks, overwrite=args.overwrite,
                              finish_early=not args.no_early_stop)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by}; the run so far is in {out}", file=sys.stderr)
        return 130
    if result.finished_early:
        print(f"finished at step {result.step}: {result.finished_early}", file=sys.stderr)
    rep = calculator_report(out)
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
    print("\nNext, try:\n" + "\n".join(f"  {command:<62} # {what}" for command, what in next_steps(out)))
    return 0


# The README's tour trains its Shakespeare model with this command; the demo suggests the same one.
SHAKESPEARE_TOUR = "tinygpt train --data shakespeare --preset tiny_char --out runs/shakespeare"


def next_steps(out: Path) -> list[tuple[str, str]]:
    """The calculator demo's suggestions: (command, what it does), each one that works with the demo's set-up;
    a step that needs an extra says which (plotting needs matplotlib, the `plot` extra)."""
    plot = "its loss curves"
    if importlib.util.find_spec("matplotlib") is None:
        plot += " (first: pip install 'tinygpt[plot]')"
    return [(f'tinygpt sample {out} --prompt "two plus three"', "ask it anything in its range"),
            (f"tinygpt eval {out}", "the accuracy table again"),
            (f"tinygpt plot {out} --out calculator.png", plot),
            (SHAKESPEARE_TOUR, "a character model of Shakespeare (the README's tour)")]


def cmd_ladder(args: argparse.Namespace) -> int:
    text = read_text(resolve_data(args.data, progress=say))  # a corpus downloaded now says so
    rungs = args.rungs.split(",") if args.rungs else list(MODERN_RUNGS if args.modern else RUNGS)
    overrides = config_overrides(args)
    out = Path(args.out or ("runs/ladder-modern" if args.modern else "runs/ladder"))

    def hooks(rung: str) -> ProgressHooks:
        print(f"\n== {rung} ==", file=sys.stderr)
        return ProgressHooks(quiet=args.quiet, estimate_over=0 if rung == rungs[0] else 10.0)

    rows = run_ladder(text, out, overrides, rungs, overwrite=args.overwrite, hooks=hooks)
    print()
    print(format_table(rows))
    write_text(out / "ladder.json", json.dumps(rows, indent=1))
    try:
        png = plot_runs([out / r for r in rungs], out / "ladder.png", rungs,
                        title="The modern ladder: GPT-2, then one piece added per rung" if args.modern
                        else "The model ladder: validation loss of each rung")
        print(f"\nvalidation curves: {png}")
    except ImportError:
        print("\n(no plot: pip install 'tinygpt[plot]' for the curves)")
    return 0
