"""The `tinygpt` command line: argparse in, library calls out. Each subcommand maps to one library call.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from tinygpt.cli.args import Parser, UsageError, error_text, printable, unknown_arguments
from tinygpt.cli.chat import add_chat_parser
from tinygpt.cli.corpora import add_corpora_parser
from tinygpt.cli.demo import add_demo_parser, add_ladder_parser
from tinygpt.cli.eval import add_eval_parser
from tinygpt.cli.inspect import add_inspect_parser
from tinygpt.cli.interop import add_hf_parsers
from tinygpt.cli.prepare import add_prepare_parser
from tinygpt.cli.sample import add_sample_parser
from tinygpt.cli.serve import add_serve_parser
from tinygpt.cli.tokenizer import add_tokenizer_parser
from tinygpt.cli.train import add_plot_parser, add_train_parser
from tinygpt.training.loop import TrainingDiverged
from tinygpt.version import __version__

# Each command group's module adds its subcommands, in the order `tinygpt --help` lists them.
COMMANDS = (add_train_parser, add_sample_parser, add_eval_parser, add_demo_parser, add_ladder_parser,
            add_plot_parser, add_prepare_parser, add_tokenizer_parser, add_corpora_parser, add_inspect_parser,
            add_hf_parsers, add_serve_parser, add_chat_parser)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tinygpt", description="Build, train, run and look inside a GPT written from scratch.")
    p.add_argument("--version", action="version", version=f"tinygpt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure a user can cause is one line on stderr and an exit code: 2 for bad
    input, 1 for a diverged run, 130 for Ctrl-C, 141 when the reader of our output went away. A library error
    naming a setting is worded with its flag (args.error_text)."""
    try:
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise UsageError(unknown_arguments(extras, getattr(args, "_parser", parser)))
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning  # one plain line, no source excerpt
            return args.func(args) or 0
    except BrokenPipeError:  # `tinygpt sample ... | head`: the reader has all it wanted
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except OSError:
            pass
        return 141
    except TrainingDiverged as e:
        print(f"error: {printable(error_text(e))}", file=sys.stderr)
        return 1
    except (ValueError, OSError, MemoryError) as e:  # our errors are ValueErrors with one-line messages
        msg = error_text(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        print(f"error: {printable(msg or type(e).__name__)}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra is missing; our messages say what to install
        print(f"error: {printable(error_text(e))}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        text = str(e)
        if "out of memory" in text or "can't allocate" in text or "not enough memory" in text:
            print(f"error: out of memory: {printable(text.splitlines()[0])}; make the model or the batch smaller",
                  file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
