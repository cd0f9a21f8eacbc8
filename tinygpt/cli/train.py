"""The `tinygpt train` and `tinygpt plot` commands: parse, call the library, print.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tinygpt.cache import cache_dir
from tinygpt.cli.args import CLIError, add_config_flags, as_flags, config_overrides, path_arg, positive_int
from tinygpt.cli.prepare import ProgressBars
from tinygpt.cli.progress import ProgressHooks, say, tensorboard_writer
from tinygpt.config import ALL_KEYS, PRESETS, ConfigError, load_toml, unknown_key_message
from tinygpt.data.conversations import LONG_CONVERSATIONS
from tinygpt.data.corpora import CORPORA, resolve_data
from tinygpt.data.prepare import Progress
from tinygpt.inspect.plot import plot_runs
from tinygpt.training.distributed import detect
from tinygpt.training.loop import train
from tinygpt.training.plan import TrainingPlan, plan_init_from, plan_new, plan_resume
from tinygpt.training.run import Run


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `train`; it sets args.func(args)."""
    t = subparsers.add_parser(
        "train", help="train a model on a text file or folder",
        description="Train a GPT on text (characters, BPE or prepared data) or on conversations, on one device or "
                    "under torchrun. Settings: defaults < --preset < --config < flags.")
    t.add_argument("--data", help="a UTF-8 text file, a JSONL or Parquet file (its \"text\" field), a folder of them, "
                                  "a corpus name (see tinygpt corpora), or a directory made by tinygpt prepare; "
                                  "a large text is prepared once, into the cache (see tinygpt prepare --help)")
    t.add_argument("--out", required=True, type=path_arg, help="run directory (checkpoints, metrics.jsonl)")
    t.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe")
    t.add_argument("--config", metavar="FILE", help="a TOML file of hyperparameters (flat keys)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--tokenizer", default=None,
                   help="char (default), bpe (trained on the training split, cached), or a tokenizer .json file")
    t.add_argument("--vocab_size", type=positive_int, default=None, help="BPE vocabulary size (default 4096)")
    t.add_argument("--init_from", metavar="RUN", default=None,
                   help="start from the weights and tokenizer of a run or checkpoint (e.g. one tinygpt import made); "
                        "a fresh optimizer and schedule; --block_size may crop, --dropout may change")
    t.add_argument("--change_data", action="store_true",
                   help="with --resume: continue on different --data than the run was trained on")
    c = t.add_argument_group("chat fine-tuning (--data conversations.jsonl, one {\"messages\": [...]} per line)")
    c.add_argument("--chat", action="store_true",
                   help="read --data as conversations even if it is not named .jsonl")
    c.add_argument("--chat_loss", choices=("assistant", "all"), default=None,
                   help="which tokens the loss counts: the assistant's replies (default: the loss mask) or all")
    c.add_argument("--skip_bad_lines", action="store_true",
                   help="leave malformed conversations out (default: refuse the file, naming the first bad line)")
    c.add_argument("--long_conversations", choices=LONG_CONVERSATIONS, default=None,
                   help="a conversation longer than the model's window: cut (default) after its last exchange that "
                        "fits, skip it, or refuse the file; the ones cut or left out are counted")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--tensorboard", action="store_true", help="also log scalars to RUN/tensorboard (needs tensorboard)")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)
    return t


def add_plot_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `plot RUN...`; it sets args.func(args)."""
    pl = subparsers.add_parser("plot", help="save a PNG of the loss curves of one or several runs")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with metrics.jsonl)")
    pl.add_argument("--out", default="loss.png", type=path_arg, help="output PNG (default loss.png)")
    pl.add_argument("--labels", nargs="+", help="one legend label per run (default: directory names)")
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=cmd_plot)
    return pl


def cmd_train(args: argparse.Namespace) -> int:
    out = Run(args.out).path  # refuses an empty --out (Path("") would be the current directory)
    overrides, preset = _settings(args)
    writer_factory = tensorboard_writer(out) if args.tensorboard else None  # checked before any work
    _refuse_contradictions(args, preset)
    master = detect().master
    if master:  # before any work: is --out usable as asked? (under torchrun rank 0's question: it takes the lock,
        Run(out).check_start(args.resume, args.overwrite)  # and another rank asking later would find it taken)
    if args.data in CORPORA:  # a named corpus downloaded now says what it fetches (the plan then finds it cached)
        resolve_data(args.data, progress=say)
    with ProgressBars(quiet=args.quiet) as bars:  # shown only while a large text is prepared (prepare.py)
        plan = _plan(args, out, overrides, preset, bars)
    if master:  # under torchrun every process plans the same run: one copy of its notes
        for note in plan.notes:
            print(as_flags(note), file=sys.stderr)
    hooks = ProgressHooks(quiet=args.quiet, writer_factory=writer_factory)
    result = train(plan.model_cfg, plan.train_cfg, plan.source, plan.tokenizer, out, resume=args.resume,
                   overwrite=args.overwrite, meta=plan.meta, hooks=hooks, init_from=plan.init_from)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint saved in {out}/latest. "
              f"Continue with: tinygpt train --out {out} --resume", file=sys.stderr)
        return 130 if result.stopped_by == "SIGINT" else 143
    return 0


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """(the hyperparameter overrides, the preset): --config's file under the flags, its preset under --preset."""
    overrides: dict[str, Any] = {}
    preset = args.preset
    if args.config:
        file_cfg = load_toml(args.config)
        file_preset = file_cfg.pop("preset", None)
        preset = preset or file_preset
        for k in file_cfg:
            if k not in ALL_KEYS or k == "vocab_size":
                raise ConfigError(f"{args.config}: {unknown_key_message(k)}")
        overrides.update(file_cfg)
    overrides.update(config_overrides(args))
    return overrides, preset


def _refuse_contradictions(args: argparse.Namespace, preset: str | None) -> None:
    """Flags that do not go together: each way a run begins (new, --resume, --init_from) takes its own."""
    if args.change_data and not args.resume:
        raise CLIError("--change_data applies only with --resume (a new run simply takes its --data)")
    if args.init_from is not None and args.resume:
        raise CLIError("--init_from starts a new run from existing weights and --resume continues a run; use one")
    if args.init_from is not None and (preset is not None or args.tokenizer is not None or args.vocab_size is not None):
        raise CLIError("--init_from takes the model's architecture and tokenizer; drop --preset, --tokenizer and "
                       "--vocab_size")


def _plan(args: argparse.Namespace, out: Path, overrides: dict[str, Any], preset: str | None,
          progress: Progress) -> TrainingPlan:
    """The plan of the run the flags ask for: resumed, started from other weights, or new."""
    reading = dict(chat=True if args.chat else None, chat_loss=args.chat_loss, skip_bad_lines=args.skip_bad_lines,
                   long_conversations=args.long_conversations, progress=progress)
    if args.resume:  # the run's own preset and tokenizer may be given again (the command that began it)
        return plan_resume(out, overrides, data=args.data, preset=preset, tokenizer=args.tokenizer,
                           vocab_size=args.vocab_size, change_data=args.change_data, **reading)
    if args.init_from is not None:
        return plan_init_from(args.init_from, args.data, overrides, out=out, **reading)
    return plan_new(args.data, overrides, preset=preset, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                    tokenizer_cache=cache_dir("tokenizers"), **reading)


def cmd_plot(args: argparse.Namespace) -> int:
    if args.labels and len(args.labels) != len(args.runs):
        raise CLIError(f"--labels needs one label per run ({len(args.runs)})")
    try:
        path = plot_runs(args.runs, args.out, args.labels, args.title)
    except ImportError as e:
        raise CLIError(str(e)) from None
    print(f"saved {path}")
    return 0
