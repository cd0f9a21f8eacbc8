"""The `tinygpt eval` command: a run's exact loss on a text, its accuracy on its task, or its chat scores.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from tinygpt.cli.args import CLIError, add_model_flags, positive_int
from tinygpt.cli.progress import StageProgress
from tinygpt.data.conversations import read_conversations, split_conversations
from tinygpt.data.prepare import is_prepared
from tinygpt.data.text import load_text, split_text
from tinygpt.device import choose_device
from tinygpt.models.quantize import quantize
from tinygpt.tasks.chat import evaluate_chat
from tinygpt.tokenizers import ChatTokenizer
from tinygpt.training.evaluate import evaluate_prepared, evaluate_text
from tinygpt.training.run import Run, kind_of, task_of


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `eval RUN`; it sets args.func(args)."""
    e = subparsers.add_parser("eval", help="loss and bits per character of a run on a text",
                              description="Exact loss over a whole split (every token predicted once).")
    e.add_argument("run_dir")
    e.add_argument("--data", help="text file or folder, or a directory made by tinygpt prepare (default: the run's "
                                  "training data)")
    e.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="which part of the text, split as in training (default: val)")
    e.add_argument("--batch_size", type=positive_int, default=32, help="windows per forward pass (default 32)")
    add_model_flags(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)
    return e


def cmd_eval(args: argparse.Namespace) -> int:
    device = choose_device(args.device)
    model, tokenizer, cfg = Run(args.run_dir).load(args.checkpoint, device)
    model = quantize(model, args.quantize, inplace=True)
    if kind_of(cfg) == "task":
        return _eval_task(args, model, cfg)
    if isinstance(tokenizer, ChatTokenizer):
        return _eval_chat(args, model, tokenizer, cfg)
    data_path = args.data or cfg.get("data")
    if not data_path:
        raise CLIError("--data is required (the checkpoint does not record its data)")
    args.split = args.split or "val"
    prepared = data_path if is_prepared(data_path) else None if args.data else cfg.get("prepared")
    bars = StageProgress()  # a large text takes minutes: a bar on a terminal, a line now and then elsewhere

    def progress(done: int, total: int) -> None:
        bars(f"evaluating the {args.split} split (windows)", done, total)

    if prepared and is_prepared(prepared):  # prepared data (the run's own copy of a large text, or --data DIR)
        scores = evaluate_prepared(model, tokenizer, prepared, args.split, args.batch_size, device, progress)
    else:
        _, text = load_text(data_path)
        train_part, val_part = split_text(text, cfg.get("train", {}).get("val_fraction", 0.1))
        part = {"val": val_part, "train": train_part, "all": text}[args.split]
        if len(part) < 2:
            raise CLIError(f"the {args.split} split of {data_path} is too short to evaluate")
        scores = evaluate_text(model, tokenizer, part, args.batch_size, device, progress)
    bars.close()
    res = {"checkpoint": cfg["path"], "data": str(data_path), "split": args.split, **scores}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['split']} loss {res['loss']:.4f} (perplexity {res['perplexity']:.2f}), "
              f"{res['bits_per_char']:.4f} bits per character, {res['bits_per_byte']:.4f} bits per byte, "
              f"{res['tokens']:,} tokens")
    return 0


def _eval_chat(args: argparse.Namespace, model: Any, tokenizer: Any, cfg: dict[str, Any]) -> int:
    """A chat run on conversations: its training file split as in training (default: the held-out part), or
    the held-out file the run records (the demo's), or --data."""
    chat = cfg.get("chat") or {}
    heldout = chat.get("heldout") if not args.data and args.split in (None, "val") else None
    data_path = heldout or args.data or cfg.get("data")
    if not data_path:
        raise CLIError("--data is required (the checkpoint does not record its conversations)")
    conversations, _ = read_conversations(data_path)
    args.split = "all" if heldout else args.split or "val"
    if args.split != "all":
        train_part, val_part = split_conversations(conversations, cfg.get("train", {}).get("val_fraction", 0.1))
        conversations = val_part if args.split == "val" else train_part
    res = {"checkpoint": cfg["path"], "data": str(data_path), "split": args.split,
           **evaluate_chat(model, tokenizer, conversations, chat.get("loss_on", "assistant"), args.batch_size)}
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['split']}: {res['conversations']:,} conversations; loss {res['loss']:.4f} on "
          f"{res['tokens']:,} tokens ({'the assistant' if chat.get('loss_on', 'assistant') == 'assistant' else 'all'})")
    for kind in ("first", "followup"):
        r = res[kind]
        if r["total"]:
            print(f"greedy replies exactly right, {'first turns' if kind == 'first' else 'follow-ups'}: "
                  f"{r['accuracy']:.1%} ({r['correct']}/{r['total']})")
    return 0


def _eval_task(args: argparse.Namespace, model: Any, cfg: dict[str, Any]) -> int:
    if args.data or args.split is not None:
        raise CLIError("a task checkpoint is evaluated on its own problems (held-out and training); drop --data "
                       "and --split")
    task = task_of(cfg)
    res = {"checkpoint": cfg["path"], "task": task.name,
           "heldout": task.score(model, "val"), "train": task.score(model, "train")}
    if args.json:
        print(json.dumps(res))
    else:
        print(accuracy_table(res))
    return 0


def accuracy_table(res: dict[str, Any]) -> str:
    """Exact-match accuracy per operation, held-out and training problems side by side."""
    rows = [f"{'operation':<10} {'held-out':>22} {'training':>22}"]
    for op in res["train"]:
        cells = []
        for split in ("heldout", "train"):
            r = res[split].get(op)
            cells.append(f"{r['accuracy']:7.1%} ({r['correct']}/{r['total']})" if r else "(none held out)")
        rows.append(f"{op:<10} {cells[0]:>22} {cells[1]:>22}")
    return "\n".join(rows)
