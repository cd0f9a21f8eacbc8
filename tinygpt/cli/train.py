"""The `tinygpt train` and `tinygpt plot` commands: parse, call the library, print.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tinygpt.cli.args import CLIError, config_overrides
from tinygpt.cli.progress import ProgressHooks, tensorboard_writer
from tinygpt.config import ALL_KEYS, ConfigError, load_toml, unknown_key_message


def cmd_train(args: argparse.Namespace) -> int:
    from tinygpt.cache import cache_dir
    from tinygpt.training.loop import train
    from tinygpt.training.plan import plan_text_run
    from tinygpt.training.run import Run

    out = Run(args.out).path  # refuses an empty --out (Path("") would be the current directory)
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
    writer_factory = tensorboard_writer(out) if args.tensorboard else None  # checked before any work
    from tinygpt.cli.prepare import ProgressBars
    with ProgressBars(quiet=args.quiet) as bars:  # shown only while a large text is prepared (prepare.py)
        plan = plan_text_run(out, args.data, overrides, preset=preset, tokenizer=args.tokenizer,
                             vocab_size=args.vocab_size, resume=args.resume, overwrite=args.overwrite,
                             change_data=args.change_data,
                             cache_dir=cache_dir("tokenizers"), init_from=args.init_from,
                             chat=True if args.chat else None, loss_on=args.chat_loss,
                             skip_bad_lines=args.skip_bad_lines, prepare_progress=bars)
    from tinygpt.training.distributed import detect
    if detect().master:  # under torchrun every process plans the same run: one copy of its notes
        for note in plan.notes:
            print(note, file=sys.stderr)
    hooks = ProgressHooks(quiet=args.quiet, writer_factory=writer_factory)
    result = train(plan.model_cfg, plan.train_cfg, plan.source, plan.tokenizer, out, resume=args.resume,
                   overwrite=args.overwrite, meta=plan.meta, hooks=hooks, init_from=plan.init_from)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint saved in {out}/latest. "
              f"Continue with: tinygpt train --out {out} --resume", file=sys.stderr)
        return 130 if result.stopped_by == "SIGINT" else 143
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from tinygpt.inspect.plot import plot_runs

    if args.labels and len(args.labels) != len(args.runs):
        raise CLIError(f"--labels needs one label per run ({len(args.runs)})")
    try:
        path = plot_runs(args.runs, args.out, args.labels, args.title)
    except ImportError as e:
        raise CLIError(str(e)) from None
    print(f"saved {path}")
    return 0
