"""The `tinygpt` command line: argparse in, library calls out. Each subcommand maps to one library call.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from tinygpt.cli.args import (
    Parser,
    UsageError,
    add_config_flags,
    finite_float,
    nonneg_int,
    path_arg,
    positive_int,
    printable,
    seed_int,
    unknown_arguments,
)
from tinygpt.cli.demo import cmd_demo, cmd_ladder
from tinygpt.cli.eval import cmd_eval
from tinygpt.cli.sample import cmd_sample
from tinygpt.cli.train import cmd_plot, cmd_train
from tinygpt.config import DEFAULT_TEMPERATURE, PRESETS
from tinygpt.version import __version__


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tinygpt", description="Build, train, run and look inside a GPT written from scratch.")
    p.add_argument("--version", action="version", version=f"tinygpt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a model on a text file or folder",
                       description="Train a GPT on text (characters, BPE or prepared data) or on conversations, on one "
                                   "device or under torchrun. Settings: defaults < --preset < --config < flags.")
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
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--tensorboard", action="store_true", help="also log scalars to RUN/tensorboard (needs tensorboard)")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate text from a trained run",
                       description="Stream generated text. The model sees at most block_size tokens; past that "
                                   "the window slides (keeps the last 3/4) and generation goes on.")
    s.add_argument("run_dir", help="run directory (uses best/, else latest/) or a checkpoint directory")
    s.add_argument("--prompt", default=None, help="text to continue (default: a newline; a task run: the question)")
    s.add_argument("--prompt_file", help="read the prompt from a file")
    s.add_argument("--max_new_tokens", type=nonneg_int, default=None,
                   help="tokens to generate (default 500; a task run: up to the end of its answer)")
    s.add_argument("--temperature", type=finite_float, default=None,
                   help=f"0 means greedy (default {DEFAULT_TEMPERATURE}; a task run: 0)")
    s.add_argument("--greedy", action="store_true", help="always take the most likely token")
    s.add_argument("--top_k", type=positive_int, default=None, help="sample among the k most likely tokens")
    s.add_argument("--top_p", type=finite_float, default=None,
                   help="sample within the smallest set of probability >= p")
    s.add_argument("--seed", type=seed_int, default=None, help="make sampling repeatable")
    s.add_argument("--num_samples", type=positive_int, default=1)
    s.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    s.add_argument("--num_beams", type=positive_int, default=1,
                   help="beam search with this many beams (>1); ends at --stop and the end-of-text token")
    s.add_argument("--length_penalty", type=finite_float, default=1.0, help="beam score = logprob / length**penalty")
    s.add_argument("--no_cache", action="store_true", help="recompute the whole window each token (reference path)")
    s.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="loss and bits per character of a run on a text",
                       description="Exact loss over a whole split (every token predicted once).")
    e.add_argument("run_dir")
    e.add_argument("--data", help="text file or folder, or a directory made by tinygpt prepare (default: the run's "
                                  "training data)")
    e.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="which part of the text, split as in training (default: val)")
    e.add_argument("--batch_size", type=positive_int, default=32, help="windows per forward pass (default 32)")
    e.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="the first run: train the calculator GPT (about 2 minutes on a 2-core CPU); "
                                    "`demo chat`: pretrain and fine-tune an assistant (about 5 minutes)",
                       description="calculator (default): train a 4-layer GPT to answer arithmetic questions in "
                                   "English words, score it on questions it never saw, and save the run. chat: "
                                   "pretrain a GPT on text about arithmetic, fine-tune it on conversations into an "
                                   "assistant, and compare the two on the same questions.")
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

    la = sub.add_parser("ladder", help="train every rung of the model ladder on one text and compare",
                        description="bigram -> single head -> multi-head -> GPT, and the GPT without position "
                                    "embeddings, residuals, LayerNorm or MLP: same data, same budget.")
    la.add_argument("--data", required=True, help="a text file, folder or corpus name")
    la.add_argument("--out", type=path_arg, help="directory for the rungs' runs (default runs/ladder, or runs/ladder-modern)")
    la.add_argument("--rungs", help="comma-separated subset of the rungs (default: all)")
    la.add_argument("--modern", action="store_true",
                    help="the modern ladder: GPT-2, then rotary, RMSNorm, SwiGLU, QK-norm, no biases, untied "
                         "embeddings and Muon added one at a time")
    la.add_argument("--overwrite", action="store_true", help="replace a ladder already in --out")
    la.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(la, show_defaults=False)
    la.set_defaults(func=cmd_ladder)

    pl = sub.add_parser("plot", help="save a PNG of the loss curves of one or several runs")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with metrics.jsonl)")
    pl.add_argument("--out", default="loss.png", type=path_arg, help="output PNG (default loss.png)")
    pl.add_argument("--labels", nargs="+", help="one legend label per run (default: directory names)")
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=cmd_plot)

    from tinygpt.cli.corpora import add_corpora_parser
    from tinygpt.cli.inspect import add_inspect_parser
    from tinygpt.cli.interop import add_hf_parsers
    from tinygpt.cli.prepare import add_prepare_parser
    from tinygpt.cli.tokenizer import add_tokenizer_parser
    add_prepare_parser(sub)
    add_tokenizer_parser(sub)
    add_corpora_parser(sub)
    add_inspect_parser(sub)
    add_hf_parsers(sub)
    from tinygpt.cli.serve import add_serve_parser
    add_serve_parser(sub)
    from tinygpt.cli.chat import add_chat_parser
    add_chat_parser(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure a user can cause is one line on stderr and an exit code: 2 for bad
    input, 1 for a diverged run, 130 for Ctrl-C, 141 when the reader of our output went away."""
    from tinygpt.training.loop import TrainingDiverged

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
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return 1
    except (ValueError, OSError, MemoryError) as e:  # our errors are ValueErrors with one-line messages
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        print(f"error: {printable(msg or type(e).__name__)}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra is missing; our messages say what to install
        print(f"error: {printable(str(e))}", file=sys.stderr)
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
