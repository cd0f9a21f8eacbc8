"""The `tinygpt sample` command: sampling settings checked, text streamed to the terminal.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tinygpt.cli.args import (SAMPLING_FLAGS, CLIError, add_model_flags, add_sampling_flags, finite_float, nonneg_int,
                              positive_int, sampling_settings)
from tinygpt.config import DEFAULT_TEMPERATURE
from tinygpt.device import choose_device
from tinygpt.generation.generate import beam_search_text, end_of_text_id, generate_text, generate_texts
from tinygpt.models.quantize import quantize
from tinygpt.tokenizers import ChatTokenizer
from tinygpt.training.run import load_checkpoint, task_of


SAMPLE_SEPARATOR = "\n" + "-" * 40 + "\n"  # printed between the texts of --num_samples N


def add_sample_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `sample RUN`; it sets args.func(args)."""
    s = subparsers.add_parser("sample", help="generate text from a trained run",
                              description="Stream generated text. The model sees at most block_size tokens; past "
                                          "that the window slides (keeps the last 3/4) and generation goes on.")
    s.add_argument("run_dir", help="run directory (uses best/, else latest/) or a checkpoint directory")
    s.add_argument("--prompt", default=None, help="text to continue (default: a newline; a task run: the question)")
    s.add_argument("--prompt_file", help="read the prompt from a file")
    s.add_argument("--max_new_tokens", type=nonneg_int, default=None,
                   help="tokens to generate (default 500; a task run: up to the end of its answer)")
    add_sampling_flags(s, f"{DEFAULT_TEMPERATURE}; a task run: 0")
    s.add_argument("--num_samples", type=positive_int, default=1,
                   help="texts to generate, together in one batch; sample i uses --seed + i, so each is the text "
                        "that seed gives alone (default 1, streamed as it comes)")
    s.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    s.add_argument("--num_beams", type=positive_int, default=1,
                   help="beam search with this many beams (>1); ends at --stop and the end-of-text token")
    s.add_argument("--length_penalty", type=finite_float, default=1.0, help="beam score = logprob / length**penalty")
    s.add_argument("--no_cache", action="store_true", help="recompute the whole window each token (reference path)")
    add_model_flags(s)
    s.set_defaults(func=cmd_sample)
    return s


def cmd_sample(args: argparse.Namespace) -> int:
    _check_sample_flags(args)
    prompt = args.prompt if args.prompt is not None else ""
    if args.prompt_file:
        prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    device = choose_device(args.device)
    model, tokenizer, cfg = load_checkpoint(args.run_dir, args.checkpoint, device)
    model = quantize(model, args.quantize, inplace=True)
    task = task_of(cfg)
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
    if args.num_beams > 1:
        text, _ = beam_search_text(model, tokenizer, prompt, max_new_tokens, stop=args.stop, eos_ids=eos_ids,
                                   **settings)[0]
        print(prompt + text)
    elif args.num_samples > 1:  # all samples in one batch; each is the text its own seed gives alone
        texts = generate_texts(model, tokenizer, prompt, max_new_tokens, args.num_samples, stop=args.stop,
                               eos_ids=eos_ids, **settings)
        sys.stdout.write(SAMPLE_SEPARATOR.join(prompt + text + "\n" for text in texts))
    else:  # one sample, streamed as it comes
        sys.stdout.write(prompt)
        for piece in generate_text(model, tokenizer, prompt, max_new_tokens, stop=args.stop, eos_ids=eos_ids,
                                   **settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def _check_sample_flags(args: argparse.Namespace) -> None:
    """Refuse `sample` flags that contradict each other or make no sense, before anything is loaded."""
    if args.prompt is not None and args.prompt_file:
        raise CLIError("give --prompt or --prompt_file, not both")
    if any(s == "" for s in args.stop):
        raise CLIError("--stop needs a non-empty string")
    if args.num_beams > 1:
        given = [f"--{f}" for f in SAMPLING_FLAGS if getattr(args, f) is not None] + (["--greedy"] if args.greedy
                                                                                      else [])
        if given:
            raise CLIError(f"--num_beams {args.num_beams} searches for the most likely text and does not sample: "
                           f"drop {', '.join(given)}")
        if args.num_samples > 1:
            raise CLIError("--num_beams is deterministic: --num_samples would print the same text again")
    else:
        sampling_settings(args, DEFAULT_TEMPERATURE)  # the values checked now; the default is the run's


def _sampling_settings(args: argparse.Namespace, task: bool) -> dict[str, Any]:
    """The generation settings of `sample`: greedy for a task run unless told otherwise, else temperature 0.8."""
    if args.num_beams > 1:
        return dict(num_beams=args.num_beams, length_penalty=args.length_penalty, use_cache=not args.no_cache)
    settings = sampling_settings(args, 0.0 if task else DEFAULT_TEMPERATURE)
    return dict(settings, seed=args.seed, use_cache=not args.no_cache)


def _nth_sample(settings: dict[str, Any], i: int) -> dict[str, Any]:
    """The settings of sample i: the seed moves on by one per sample, so --num_samples gives different texts."""
    if settings.get("seed") is None:
        return settings
    return {**settings, "seed": settings["seed"] + i}
