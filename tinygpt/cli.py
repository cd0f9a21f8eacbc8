"""The `tinygpt` command line: argparse in, library calls out. Each subcommand maps to one library call."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .config import (ALL_KEYS, DEFAULT_TEMPERATURE, DEFAULTS, HELP, PRESETS, ConfigError, is_yes_no, load_toml,
                     parse_value, unknown_key_message)


class CLIError(ValueError):
    """A command-line mistake; main() prints it as one line and exits 2."""


class UsageError(CLIError):
    """Unknown, missing or malformed arguments."""


# --- argument types: every option's range is checked here, once, and the message names the option ----

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
    import math
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
        import difflib
        import re
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


# nanoGPT and other tools' spellings of our options
ALIASES = {"lr": "learning_rate", "epochs": "max_iters", "iters": "max_iters", "steps": "max_iters",
           "wd": "weight_decay", "bs": "batch_size", "context": "block_size", "ctx": "block_size"}


def suggest(flag: str, parser: argparse.ArgumentParser) -> str | None:
    """The option a mistyped flag probably meant: suggest("--lr", train_parser) == "--learning_rate"."""
    import difflib
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


# --- train -------------------------------------------------------------------------------------

def _add_config_flags(p: argparse.ArgumentParser, show_defaults: bool = True) -> None:
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
                       help=HELP[key] + (f" (default {default})" if show_defaults else ""))


_BARE = object()  # a hyperparameter flag given without a value: true for a yes/no setting, else an error


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    for key, value in out.items():
        if value is _BARE:
            if not is_yes_no(key):
                raise ConfigError(f"--{key} needs a value: --{key}=V (see --help)")
            out[key] = "true"
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .cache import cache_dir
    from .text_run import plan_text_run
    from .run import Run
    from .train import train

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
    overrides.update(_overrides(args))
    writer_factory = _tensorboard(out) if args.tensorboard else None  # checked before any work
    from .cli_prepare import ProgressBars
    with ProgressBars(quiet=args.quiet) as bars:  # shown only while a large text is prepared (prepare.py)
        plan = plan_text_run(out, args.data, overrides, preset=preset, tokenizer=args.tokenizer,
                             vocab_size=args.vocab_size, resume=args.resume, overwrite=args.overwrite,
                             change_data=args.change_data,
                             cache_dir=cache_dir("tokenizers"), init_from=args.init_from,
                             chat=True if args.chat else None, loss_on=args.chat_loss,
                             skip_bad_lines=args.skip_bad_lines, prepare_progress=bars)
    from .distributed import detect
    if detect().master:  # under torchrun every process plans the same run: one copy of its notes
        for note in plan.notes:
            print(note, file=sys.stderr)
    hooks = _ProgressHooks(quiet=args.quiet, writer_factory=writer_factory)
    result = train(plan.model_cfg, plan.train_cfg, plan.source, plan.tokenizer, out, resume=args.resume,
                   overwrite=args.overwrite, meta=plan.meta, hooks=hooks, init_from=plan.init_from)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint saved in {out}/latest. "
              f"Continue with: tinygpt train --out {out} --resume", file=sys.stderr)
        return 130 if result.stopped_by == "SIGINT" else 143
    return 0


def _tensorboard(out: Path) -> Any:
    """A function making the TensorBoard writer once the run directory is ours (so a refused run creates
    nothing); TensorBoard missing is an error before any work."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CLIError("--tensorboard needs TensorBoard: pip install 'tinygpt[tensorboard]'") from None
    return lambda: SummaryWriter(str(out / "tensorboard"))


class _ProgressHooks:
    """Draws the progress bar (loss, lr, tokens/s, ETA) and prints evaluations."""

    def __init__(self, quiet: bool = False, writer_factory: Any = None):
        self.quiet, self.bar, self.tps = quiet, None, None
        self.writer_factory, self.writer = writer_factory, None  # TensorBoard, made when training starts

    def on_start(self, info: dict[str, Any]) -> None:
        from tqdm import tqdm
        if self.writer_factory is not None:
            self.writer = self.writer_factory()
        if info.get("dtype_probe"):
            timed = ", ".join(f"{k} {v:.1f} ms" for k, v in info["dtype_probe"].items())
            print(f"precision: {info['dtype']}, the faster per training step on this CPU ({timed})", file=sys.stderr)
        if info.get("fsdp") is False:
            print("note: FSDP shards over the processes torchrun starts; with one process this run trains unsharded",
                  file=sys.stderr)
        print(f"training on {info['device']} ({info['dtype']}), {info['params'] / 1e6:.2f}M parameters, "
              f"{info['tokens_per_step']:,} tokens per step"
              + (f", sharded over {info['world_size']} processes (FSDP)" if info.get("fsdp") else "")
              + (f", resuming at step {info['step']}" if info["resumed"] else ""), file=sys.stderr)
        self.bar = tqdm(total=info["max_iters"], initial=info["step"], unit="step", dynamic_ncols=True,
                        disable=self.quiet, file=sys.stderr)

    def on_step(self, m: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.tps = m["tokens_per_sec"] if self.tps is None else 0.9 * self.tps + 0.1 * m["tokens_per_sec"]
        self.bar.set_postfix_str(f"loss {m['train_loss']:.4f}, lr {m['lr']:.2e}, {self.tps:,.0f} tok/s", refresh=False)
        self.bar.update(m["step"] - self.bar.n)
        if self.writer is not None:
            for k in ("train_loss", "lr", "tokens_per_sec"):
                self.writer.add_scalar(k, m[k], m["step"])

    def on_eval(self, m: dict[str, Any]) -> None:
        from .evaluate import bits
        unit = f"{m['val_bits_per_byte']:.3f} bits/byte" if "val_bits_per_byte" in m \
            else f"{bits(m['val_loss'], 1.0):.3f} bits/token"
        msg = f"step {m['step']}: train loss {m['eval_train_loss']:.4f}, val loss {m['val_loss']:.4f} ({unit})"
        exact = [f"{k[10:]} {m[k]:.1%}" for k in ("val_exact_first", "val_exact_followup") if k in m]
        if exact:
            msg += f"; held-out replies exactly right: {', '.join(exact)}"
        if self.writer is not None:
            for k in ("val_loss", "eval_train_loss", "val_bits_per_char", "val_bits_per_byte"):
                if k in m:
                    self.writer.add_scalar(k, m[k], m["step"])
        if self.bar is not None and not self.quiet:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def on_checkpoint(self, path: Path, kind: str) -> None: ...

    def on_end(self, result: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        best = f", best val loss {result.best_val_loss:.4f}" if result.best_val_loss < float("inf") else ""
        print(f"done: step {result.step}{best}; run saved in {result.out_dir}", file=sys.stderr)


# --- sample ------------------------------------------------------------------------------------

def cmd_sample(args: argparse.Namespace) -> int:
    from .run import load_checkpoint, task_of
    from .device import choose_device
    from .generate import beam_search_text, end_of_text_id, generate_text

    _check_sample_flags(args)
    prompt = args.prompt if args.prompt is not None else ""
    if args.prompt_file:
        prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    device = choose_device(args.device)
    model, tokenizer, cfg = load_checkpoint(args.run_dir, args.checkpoint, device)
    task = task_of(cfg)
    from .tokenizers import ChatTokenizer
    if isinstance(tokenizer, ChatTokenizer):
        print(f"note: {args.run_dir} is a chat model; talk with it with: tinygpt chat {args.run_dir} "
              f"(sample continues the raw text, chat tokens and all)", file=sys.stderr)
    settings = _sampling_settings(args, task is not None)
    if task is not None:  # a task checkpoint answers questions: wrap the prompt, stop at the end of the answer
        if args.stop:
            raise CLIError("--stop does not apply to a task run: its answer ends at <eos>")
        for i in range(args.num_samples):
            answer = task.answer(model, prompt, args.max_new_tokens, **_nth_sample(settings, i))
            print(answer)
            if not answer:
                print("note: the model ended its answer at once (it may need more training)", file=sys.stderr)
        return 0
    if prompt == "":
        prompt = "\n"  # the conventional start for character models
    max_new_tokens = 500 if args.max_new_tokens is None else args.max_new_tokens
    ids = tokenizer.encode(prompt)
    block = model.config.block_size
    if len(ids) > block:
        print(f"note: the prompt has {len(ids)} tokens; the model sees only the last {block}", file=sys.stderr)
    eos = end_of_text_id(tokenizer)
    eos_ids = [] if eos is None else [eos]
    for i in range(args.num_samples):
        if i:
            print("\n" + "-" * 40)
        if args.num_beams > 1:
            text, _ = beam_search_text(model, tokenizer, prompt, max_new_tokens, stop=args.stop, eos_ids=eos_ids,
                                       **settings)[0]
            print(prompt + text)
            continue
        sys.stdout.write(prompt)
        for piece in generate_text(model, tokenizer, prompt, max_new_tokens, stop=args.stop, eos_ids=eos_ids,
                                   **_nth_sample(settings, i)):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


_SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed")


def _check_sample_flags(args: argparse.Namespace) -> None:
    """Refuse `sample` flags that contradict each other or make no sense, before anything is loaded."""
    if args.prompt is not None and args.prompt_file:
        raise CLIError("give --prompt or --prompt_file, not both")
    if any(s == "" for s in args.stop):
        raise CLIError("--stop needs a non-empty string")
    if args.greedy and args.temperature not in (None, 0):
        raise CLIError(f"--greedy means temperature 0; drop --temperature {args.temperature}")
    if args.num_beams > 1:
        given = [f"--{f}" for f in _SAMPLING_FLAGS if getattr(args, f) is not None] + (["--greedy"] if args.greedy
                                                                                       else [])
        if given:
            raise CLIError(f"--num_beams {args.num_beams} searches for the most likely text and does not sample: "
                           f"drop {', '.join(given)}")
        if args.num_samples > 1:
            raise CLIError("--num_beams is deterministic: --num_samples would print the same text again")


def _sampling_settings(args: argparse.Namespace, task: bool) -> dict[str, Any]:
    """The generation settings of `sample`: greedy for a task run unless told otherwise, else temperature 0.8."""
    from .sampling import check_settings

    if args.num_beams > 1:
        return dict(num_beams=args.num_beams, length_penalty=args.length_penalty, use_cache=not args.no_cache)
    temperature = 0.0 if args.greedy else args.temperature
    if temperature is None:
        temperature = 0.0 if task else DEFAULT_TEMPERATURE
    check_settings(temperature, args.top_k, args.top_p)
    return dict(temperature=temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                use_cache=not args.no_cache)


def _nth_sample(settings: dict[str, Any], i: int) -> dict[str, Any]:
    """The settings of sample i: the seed moves on by one per sample, so --num_samples gives different texts."""
    if settings.get("seed") is None:
        return settings
    return {**settings, "seed": settings["seed"] + i}


# --- eval --------------------------------------------------------------------------------------

def cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_text, split_text
    from .device import choose_device
    from .evaluate import evaluate_prepared, evaluate_text
    from .prepare import is_prepared
    from .run import Run, kind_of

    device = choose_device(args.device)
    model, tokenizer, cfg = Run(args.run_dir).load(args.checkpoint, device)
    if kind_of(cfg) == "task":
        return _eval_task(args, model, cfg)
    from .tokenizers import ChatTokenizer
    if isinstance(tokenizer, ChatTokenizer):
        return _eval_chat(args, model, tokenizer, cfg)
    data_path = args.data or cfg.get("data")
    if not data_path:
        raise CLIError("--data is required (the checkpoint does not record its data)")
    args.split = args.split or "val"
    prepared = data_path if is_prepared(data_path) else None if args.data else cfg.get("prepared")
    if prepared and is_prepared(prepared):  # prepared data (the run's own copy of a large text, or --data DIR)
        scores = evaluate_prepared(model, tokenizer, prepared, args.split, args.batch_size, device)
    else:
        _, text = load_text(data_path)
        train_part, val_part = split_text(text, cfg.get("train", {}).get("val_fraction", 0.1))
        part = {"val": val_part, "train": train_part, "all": text}[args.split]
        if len(part) < 2:
            raise CLIError(f"the {args.split} split of {data_path} is too short to evaluate")
        scores = evaluate_text(model, tokenizer, part, args.batch_size, device)
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
    from .chat import evaluate_chat, read_conversations, split_conversations

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
    from .run import task_of

    if args.data or args.split is not None:
        raise CLIError("a task checkpoint is evaluated on its own problems (held-out and training); drop --data "
                       "and --split")
    task = task_of(cfg)
    res = {"checkpoint": cfg["path"], "task": task.name,
           "heldout": task.score(model, "val"), "train": task.score(model, "train")}
    if args.json:
        print(json.dumps(res))
    else:
        print(_accuracy_table(res))
    return 0


def _accuracy_table(res: dict[str, Any]) -> str:
    """Exact-match accuracy per operation, held-out and training problems side by side."""
    rows = [f"{'operation':<10} {'held-out':>22} {'training':>22}"]
    for op in res["train"]:
        cells = []
        for split in ("heldout", "train"):
            r = res[split].get(op)
            cells.append(f"{r['accuracy']:7.1%} ({r['correct']}/{r['total']})" if r else "(none held out)")
        rows.append(f"{op:<10} {cells[0]:>22} {cells[1]:>22}")
    return "\n".join(rows)


# --- demo --------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import report, train_calculator
    from .run import Run

    if args.which == "chat":
        overrides = _overrides(args)
        seed = parse_value("seed", overrides.pop("seed", 0))
        given = [f"--{k}" for k in overrides] + (["--no_early_stop"] if args.no_early_stop else [])
        if given:
            raise CLIError(f"tinygpt demo chat has its own recipe; drop {', '.join(given)} (it takes --out, --seed, "
                           f"--chat_loss, --overwrite and --quiet)")
        from .cli_chat import cmd_demo_chat
        return cmd_demo_chat(args, seed)
    if args.chat_loss is not None:
        raise CLIError("--chat_loss applies to tinygpt demo chat")

    out = Path(args.out) if args.out else Path("runs/calculator")
    if args.out is None and not args.overwrite:  # rerunning the default demo never clobbers an earlier one
        n = 2
        while Run(out).holds_run():
            out = Path(f"runs/calculator-{n}")
            n += 1
    overrides = _overrides(args)
    print(f"tinygpt demo: a GPT learns arithmetic in English words (\"seven times eight\" -> \"fifty six\"),\n"
          f"trained from scratch; it is then tested on questions it never saw. Run directory: {out}", file=sys.stderr)
    hooks = _ProgressHooks(quiet=args.quiet)
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
    print(_accuracy_table(rep))
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


# --- ladder ------------------------------------------------------------------------------------

def cmd_ladder(args: argparse.Namespace) -> int:
    from .corpora import resolve_data
    from .data import read_text
    from .ladder import MODERN_RUNGS, RUNGS, format_table, run_ladder

    text = read_text(resolve_data(args.data))
    rungs = args.rungs.split(",") if args.rungs else list(MODERN_RUNGS if args.modern else RUNGS)
    overrides = _overrides(args)
    out = Path(args.out or ("runs/ladder-modern" if args.modern else "runs/ladder"))

    def hooks(rung: str) -> _ProgressHooks:
        print(f"\n== {rung} ==", file=sys.stderr)
        return _ProgressHooks(quiet=args.quiet)

    rows = run_ladder(text, out, overrides, rungs, overwrite=args.overwrite, hooks=hooks)
    print()
    print(format_table(rows))
    from .files import write_text
    write_text(out / "ladder.json", json.dumps(rows, indent=1))
    try:
        from .plot import plot_runs
        png = plot_runs([out / r for r in rungs], out / "ladder.png", rungs,
                        title="The modern ladder: GPT-2, then one piece added per rung" if args.modern
                        else "The model ladder: validation loss of each rung")
        print(f"\nvalidation curves: {png}")
    except ImportError:
        print("\n(no plot: pip install 'tinygpt[plot]' for the curves)")
    return 0


# --- plot --------------------------------------------------------------------------------------

def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_runs

    if args.labels and len(args.labels) != len(args.runs):
        raise CLIError(f"--labels needs one label per run ({len(args.runs)})")
    try:
        path = plot_runs(args.runs, args.out, args.labels, args.title)
    except ImportError as e:
        raise CLIError(str(e)) from None
    print(f"saved {path}")
    return 0


# --- parser ------------------------------------------------------------------------------------

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
    _add_config_flags(t)
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
    _add_config_flags(d, show_defaults=False)
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
    _add_config_flags(la, show_defaults=False)
    la.set_defaults(func=cmd_ladder)

    pl = sub.add_parser("plot", help="save a PNG of the loss curves of one or several runs")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with metrics.jsonl)")
    pl.add_argument("--out", default="loss.png", type=path_arg, help="output PNG (default loss.png)")
    pl.add_argument("--labels", nargs="+", help="one legend label per run (default: directory names)")
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=cmd_plot)

    from .cli_corpora import add_corpora_parser
    from .cli_hf import add_hf_parsers
    from .cli_inspect import add_inspect_parser
    from .cli_tokenizer import add_tokenizer_parser
    from .cli_prepare import add_prepare_parser
    add_prepare_parser(sub)
    add_tokenizer_parser(sub)
    add_corpora_parser(sub)
    add_inspect_parser(sub)
    add_hf_parsers(sub)
    from .cli_serve import add_serve_parser
    add_serve_parser(sub)
    from .cli_chat import add_chat_parser
    add_chat_parser(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def printable(text: str) -> str:
    """A message fit for one terminal line: control characters (from prompts, file names) are escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure a user can cause is one line on stderr and an exit code: 2 for bad
    input, 1 for a diverged run, 130 for Ctrl-C, 141 when the reader of our output went away."""
    from .train import TrainingDiverged

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


if __name__ == "__main__":
    sys.exit(main())
