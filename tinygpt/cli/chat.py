"""The `tinygpt chat` command (a conversation with a chat run) and `tinygpt demo chat` (the assistant demo):
parse, call generation/chat.py / recipes/assistant.py, print."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO

from tinygpt.cli.args import (CLIError, add_model_flags, add_sampling_flags, error_text, positive_int,
                              sampling_settings)
from tinygpt.cli.progress import ProgressHooks, StageProgress
from tinygpt.data.conversations import ChatError
from tinygpt.device import choose_device
from tinygpt.generation.chat import ChatSession
from tinygpt.models.quantize import quantize
from tinygpt.recipes.assistant import COMPARE_QUESTIONS, compare, stage_steps, train_demo
from tinygpt.training.run import Run, load_checkpoint

COMMANDS = "/reset starts the conversation over; /quit (or Ctrl-D) ends it"


def add_chat_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "chat", help="talk with a chat run (one fine-tuned on conversations)",
        description="A conversation with a chat model. The history stays in the model's window: when it no longer "
                    "fits, the oldest exchanges are dropped (and you are told). In a terminal, replies stream; "
                    f"{COMMANDS}. When standard input is not a terminal, each line is one user turn and each "
                    "reply is printed on one line (newlines in it become spaces), so scripts can talk to it.")
    p.add_argument("run_dir", help="a chat run directory (uses best/, else latest/) or a checkpoint directory")
    p.add_argument("--system", default=None, help="a system message that opens the conversation")
    p.add_argument("--max_new_tokens", type=positive_int, default=200, help="the longest reply, in tokens (default 200)")
    add_sampling_flags(p, "0, greedy: small models answer best so")
    add_model_flags(p)
    p.set_defaults(func=cmd_chat)
    return p


def cmd_chat(args: argparse.Namespace) -> int:
    settings = sampling_settings(args, 0.0)  # checked before the model is loaded
    model, tokenizer, cfg = load_checkpoint(args.run_dir, args.checkpoint, choose_device(args.device))
    model = quantize(model, args.quantize, inplace=True)
    try:
        session = ChatSession(model, tokenizer, args.system, args.max_new_tokens)
    except ChatError:
        raise CLIError(f"{args.run_dir} is not a chat model: it continues text (try tinygpt sample {args.run_dir}); "
                       f"make it a chat model with tinygpt train --init_from {args.run_dir} --data "
                       f"conversations.jsonl --out RUN") from None
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {cfg['path']} (it reads {model.config.block_size} tokens at most); {COMMANDS}.",
              file=sys.stderr)
    failed = False
    for turn, line in enumerate(_lines(sys.stdin, interactive)):
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            session.reset()
            print("(the conversation starts over)", file=sys.stderr)
            continue
        if text in ("/quit", "/exit"):
            break
        seed = None if args.seed is None else args.seed + turn
        try:
            if interactive:
                _stream(session.reply(text, seed=seed, **settings), sys.stdout)
            else:
                print(" ".join("".join(session.reply(text, seed=seed, **settings)).splitlines()), flush=True)
        except ChatError as e:
            print(f"error: {error_text(e)}", file=sys.stderr)
            if not interactive:
                print(flush=True)  # one line per turn, even for one that got no reply
                failed = True
            continue
        if session.dropped:
            print(f"(dropped the {session.dropped} oldest message(s) to keep the conversation within the model's "
                  f"window of {model.config.block_size} tokens)", file=sys.stderr)
    return 1 if failed else 0


def _lines(stream: TextIO, interactive: bool) -> Iterator[str]:
    """User turns: prompted lines in a terminal (until Ctrl-D), else the lines of standard input. In a terminal
    the lines can be edited, and Up and Down go through the turns typed so far (kept in memory only)."""
    if not interactive:
        yield from stream
        return
    try:  # imported only for a terminal: once loaded, input() edits lines with it; not every platform has it
        import readline  # noqa: F401
    except ImportError:  # pragma: no cover - e.g. Windows without pyreadline
        pass
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return


def _stream(pieces: Iterator[str], out: TextIO) -> None:
    out.write("assistant> ")
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")


# --- demo chat --------------------------------------------------------------------------------------

def cmd_demo_chat(args: argparse.Namespace, seed: int = 0, max_iters: int | None = None) -> int:
    sft_steps = stage_steps(max_iters)[1]  # a budget too small for both trainings is refused before any work
    out = Path(args.out) if args.out else Path("runs/chat")
    if args.out is None and not args.overwrite:  # rerunning the default demo never clobbers an earlier one
        n = 2
        while Run(out / "base").holds_run() or Run(out / "assistant").holds_run():
            out = Path(f"runs/chat-{n}")
            n += 1
    print("tinygpt demo chat: from nothing to an assistant in two trainings, in a few minutes.\n"
          "  1. pretraining: a GPT reads plain text about arithmetic in words and learns to continue it;\n"
          "  2. fine-tuning (SFT): it reads conversations, with the loss only on the assistant's replies.\n"
          f"Then both answer the same questions, and the assistant is scored on problems it never saw. In {out}",
          file=sys.stderr)
    stages = {"base": "1. pretraining", "assistant": "2. fine-tuning on conversations"}

    def hooks(stage: str) -> Any:  # the pretraining's time estimate covers the fine-tuning too: the demo's cost
        print(f"\n{stages[stage]}", file=sys.stderr)
        return ProgressHooks(quiet=args.quiet, estimate_over=0,
                             then=(sft_steps, "fine-tuning") if stage == "base" else None)

    progress = StageProgress(quiet=args.quiet)
    rep = train_demo(out, seed=seed, loss_on=args.chat_loss or "assistant", hooks=hooks, overwrite=args.overwrite,
                     max_iters=max_iters, progress=progress)
    if rep.get("stopped_by"):
        print(f"stopped by {rep['stopped_by']}; the runs so far are in {out}", file=sys.stderr)
        return 130 if rep["stopped_by"] == "SIGINT" else 143
    print("\nThe same questions, to the base model (it continues the text) and to the assistant:", flush=True)
    rows = compare(out, COMPARE_QUESTIONS, progress=progress)
    progress.close()
    for q, base, assistant in rows:
        print(f"\n  question:  {q}\n  base:      {base}\n  assistant: {assistant}")
    print("\nThe assistant's exact-match accuracy on held-out questions (problems and topics it never saw):")
    for key, cell in rep["heldout"]["form"].items():
        print(f"  {key:<36} {cell['accuracy']:7.1%} ({cell['correct']}/{cell['total']})")
    for key, cell in rep["heldout"]["kind"].items():
        print(f"  {'all ' + key + ' turns':<36} {cell['accuracy']:7.1%} ({cell['correct']}/{cell['total']})")
    secs = rep["train_seconds"]
    print(f"\ntraining took {secs['base']:.0f} s + {secs['assistant']:.0f} s; the runs are in {out}/base and "
          f"{out}/assistant, the data beside them")
    print(f"""
Next, try:
  tinygpt chat {out}/assistant                       # talk with it (greedy; /reset, /quit)
  echo "what is two plus three?" | tinygpt chat {out}/assistant
  tinygpt sample {out}/base --prompt "what is two plus three?"   # the base model only continues text
  tinygpt serve {out}/assistant                      # its chat in the browser, and the API""")
    return 0


__all__ = ["add_chat_parser", "cmd_chat", "cmd_demo_chat"]
