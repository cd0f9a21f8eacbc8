"""The command line's vocabulary: its errors, argument types (each option's range checked once, the message
naming the option), the parser that suggests near-miss flags, the hyperparameter flags, and the library's
texts worded as the command line says them (a setting named as its flag).
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
from typing import Any

from tinygpt.config import ALL_KEYS, DEFAULTS, HELP, ConfigError, SettingText, is_yes_no
from tinygpt.generation.sampling import check_settings, penalized
from tinygpt.models.quantize import QUANTIZE_MODES


class CLIError(ValueError):
    """A command-line mistake; main() prints it as one line and exits 2."""


class UsageError(CLIError):
    """Unknown, missing or malformed arguments."""


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def seed_int(text: str) -> int:
    value = _int(text)
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def path_arg(text: str) -> str:
    """A file or directory name: an empty one (an unset shell variable) must not mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); give a path")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (`--lr` must not silently mean `--lr_decay_iters`) and with one-line
    errors: a mistake raises UsageError instead of printing the usage and exiting."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.match(r"argument .*: invalid choice: '(.*?)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(choices)}"
            raise UsageError(f"unknown choice {m.group(1)!r} for {self.prog} ({hint})")
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = super().parse_known_args(args, namespace)
        if not hasattr(ns, "_parser"):  # the innermost subcommand's parser, to suggest its options
            ns._parser = self
        return ns, extras


# --- sampling: the flags `sample` and `chat` share, spelled, read and checked alike ----------------------------

PENALTIES = {"repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}  # each one's "off"


def add_sampling_flags(p: argparse.ArgumentParser, temperature_default: str) -> None:
    """--temperature, --greedy, --top_k, --top_p, --seed and the three penalties. temperature_default says what
    the command does without --temperature (sample: 0.8 for text; chat: greedy)."""
    p.add_argument("--temperature", type=finite_float, default=None,
                   help=f"0 takes the most likely token (default {temperature_default})")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (temperature 0)")
    p.add_argument("--top_k", type=positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top_p", type=finite_float, default=None,
                   help="sample within the smallest set of probability >= p")
    p.add_argument("--seed", type=seed_int, default=None, help="make sampling repeatable")
    p.add_argument("--repetition_penalty", type=finite_float, default=None,
                   help="> 1 makes every token already in the text less likely: its logit divided by it when positive, "
                        "multiplied when negative (1: off, the default)")
    p.add_argument("--frequency_penalty", type=finite_float, default=None,
                   help="in [-2, 2]: a token's logit loses this for each time it was generated (0: off, the default)")
    p.add_argument("--presence_penalty", type=finite_float, default=None,
                   help="in [-2, 2]: a token's logit loses this once it has been generated (0: off, the default)")


SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed", *PENALTIES)  # what a deterministic search refuses


def sampling_settings(args: argparse.Namespace, temperature: float) -> dict[str, Any]:
    """The generation settings the shared flags ask for, checked (one line for a value out of range):
    temperature (0 with --greedy; `temperature` when not given), top_k, top_p, and each penalty only when it is
    switched on (the generation functions take them as keyword arguments of the same names)."""
    if args.greedy and args.temperature not in (None, 0):
        raise CLIError(f"--greedy means temperature 0; drop --temperature {args.temperature:g}")
    if not args.greedy and args.temperature is not None:
        temperature = args.temperature
    penalties = {k: getattr(args, k) for k, off in PENALTIES.items() if getattr(args, k) not in (None, off)}
    check_settings(0.0 if args.greedy else temperature, args.top_k, args.top_p, **penalties)
    out: dict[str, Any] = dict(temperature=0.0 if args.greedy else temperature, top_k=args.top_k, top_p=args.top_p)
    if penalized(**penalties):
        out.update(penalties)
    return out


# nanoGPT and other tools' spellings of our options
ALIASES = {"lr": "learning_rate", "epochs": "max_iters", "iters": "max_iters", "steps": "max_iters",
           "wd": "weight_decay", "bs": "batch_size", "context": "block_size", "ctx": "block_size"}


def suggest(flag: str, parser: argparse.ArgumentParser) -> str | None:
    """The option a mistyped flag probably meant: suggest("--lr", train_parser) == "--learning_rate"."""
    name = flag.split("=", 1)[0].lstrip("-")
    known = [o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")]
    if ALIASES.get(name) in known:
        return "--" + ALIASES[name]
    by_initials = [k for k in known if len(name) > 1 and "".join(w[:1] for w in k.split("_")) == name]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    by_prefix = [k for k in known if k.startswith(name)]
    for group in (by_initials, close, by_prefix):
        if group:
            return "--" + group[0]
    return None


def unknown_arguments(extras: list[str], parser: argparse.ArgumentParser) -> str:
    flag = next((e for e in extras if e.startswith("-")), None)
    if flag is None:
        return f"unexpected argument {extras[0]!r} (see {parser.prog} --help)"
    hint = suggest(flag, parser)
    shown = flag.split("=", 1)[0]
    return f"unknown option {shown}" + (f" (did you mean {hint}?)" if hint else f" (see {parser.prog} --help)")


def add_config_flags(p: argparse.ArgumentParser, show_defaults: bool = True) -> None:
    """The hyperparameter flags; `show_defaults`: the config's own defaults apply (train), else a recipe of the
    command's sets them (demo, ladder)."""
    g = p.add_argument_group("hyperparameters (nanoGPT names; --name=value or --name value; "
                             + ("defaults without --preset" if show_defaults else "defaults: this command's recipe")
                             + "; a yes/no setting given bare is true)")
    for key in ALL_KEYS:
        if key == "vocab_size":
            continue
        default = str(DEFAULTS[key]).lower() if is_yes_no(key) else DEFAULTS[key]
        g.add_argument(f"--{key}", dest=f"cfg_{key}", metavar="V", nargs="?", const=_BARE, default=None,
                       help=as_flags(HELP[key]) + (f" (default {default})" if show_defaults else ""))


_BARE = object()  # a hyperparameter flag given without a value: true for a yes/no setting, else an error


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    for key, value in out.items():
        if value is _BARE:
            if not is_yes_no(key):
                raise ConfigError(f"--{key} needs a value: --{key}=V (see --help)")
            out[key] = "true"
    return out


def flag(name: str) -> str:
    """The command line's spelling of a setting: flag("chat_loss") == "--chat_loss"."""
    return f"--{name}"


def as_flags(text: str) -> str:
    """A library text as the command line says it: each setting a SettingText names, as its flag."""
    return text.spelled(flag) if isinstance(text, SettingText) else text


def error_text(error: BaseException) -> str:
    """The message of a library error as the command line says it (see as_flags)."""
    message = error.args[0] if len(error.args) == 1 else None
    return as_flags(message) if isinstance(message, SettingText) else str(error)


def printable(text: str) -> str:
    """A message fit for one terminal line: control characters (from prompts, file names) are escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def add_model_flags(p: argparse.ArgumentParser, device: str = "auto") -> None:
    """--checkpoint, --device and --quantize: which of a run's checkpoints a command loads, onto what, and with
    which weights' precision (models/quantize.py's quantize)."""
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--device", default=device,
                   help=None if device == "auto" else f"{device} (default), cuda, mps or auto")
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                   help="run with lower-precision weights: int8 (per output channel, a quarter of fp32's memory "
                        "traffic) or bf16 (default: the checkpoint's fp32)")
