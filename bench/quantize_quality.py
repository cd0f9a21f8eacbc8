"""What int8 and bf16 weights cost in quality (models/quantize.py): validation loss in fp32, bf16 and int8, and
greedy agreement with fp32 over 1,000 generated tokens. One command, one Markdown table.

    python bench/quantize_quality.py RUN_DIR [--checkpoint best]       # a tinygpt run, on its own validation split
    python bench/quantize_quality.py --hf FOLDER --text FILE          # a Hugging Face GPT-2 (or Llama) folder
    python bench/quantize_quality.py --hf FOLDER --text FILE --val_fraction 0.1   # on FILE's validation split

A run is scored on the validation split of the text it was trained on, split as in training (`tinygpt eval`'s
figure), or on --text. A Hugging Face folder (GPT-2's own 124M weights, fetched beforehand, or any model of its
shape, such as `tinygpt export --format hf` writes) is imported with tinygpt.interop's import_hf, the importer of
`tinygpt import`, into a temporary checkpoint and scored on --text: its validation part (the last tenth, as
training splits it) with --val_fraction 0.1, else the whole of it; at most --max_chars characters of it. The
importer reads byte-level BPE tokenizers only: an export of a run with the character tokenizer does not come back.

Greedy agreement. --prompts prompts of --prompt_tokens tokens each are taken from evenly spaced places in the
scored text; each precision continues each of them greedily for --tokens / --prompts tokens (1,000 tokens in
all by default). fp32's continuations are the reference. Four figures:
- "identical": the share of all generated tokens that come before their prompt's first difference from fp32
  (a continuation that never differs counts in full; after the first difference the texts go their own ways,
  so nothing later is counted);
- "first difference": per prompt, the position (0-based, in generated tokens) of the first token that differs
  from fp32's; "-" where none differs (past 10 prompts: the median and range of those that differ);
- "forced top-1": teacher-forced. The model reads fp32's continuations (through the same sliding window as
  generation) and at every position predicts the next token; the share of its most likely tokens that equal
  fp32's choice. It counts every near-tie the lower precision breaks the other way, without the drift.
- "text top-1": teacher-forced on the scored text itself (up to --top1_tokens tokens of it, read in windows of
  the model's length): the share of positions where the most likely next token equals fp32's most likely one.
  The widest sample of the four, on real text rather than on fp32's own.
"tok/s" is the greedy generation speed, one prompt at a time (a figure for this machine and its load only).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (bench/machine.py)

from tinygpt.data.prepare import is_prepared, open_prepared  # noqa: E402
from tinygpt.data.text import load_text, split_text  # noqa: E402
from tinygpt.generation.decoder import Decoder  # noqa: E402
from tinygpt.generation.generate import generate  # noqa: E402
from tinygpt.models import count_params  # noqa: E402
from tinygpt.models.quantize import quantize  # noqa: E402
from tinygpt.training.evaluate import evaluate_prepared, evaluate_text  # noqa: E402
from tinygpt.training.run import load_checkpoint  # noqa: E402

MODES = (None, "bf16", "int8")


@dataclass
class Agreement:
    """How one precision's greedy continuations compare with fp32's (see the module docstring)."""
    identical: int            # generated tokens before each prompt's first difference, summed over the prompts
    first_difference: list    # per prompt: the position of the first differing token, or None
    forced: int               # teacher-forced positions whose top-1 token equals fp32's
    total: int                # generated tokens, all prompts together
    text_same: int = 0        # positions of the scored text where the top-1 token equals fp32's
    text_total: int = 0       # positions of the scored text compared


def first_difference(tokens: Sequence[int], reference: Sequence[int]) -> int | None:
    """The first position where tokens and reference differ, or None if they agree over the reference's length
    (a shorter `tokens` differs where it ends). first_difference([1, 2, 3], [1, 5, 3]) == 1."""
    for i, ref in enumerate(reference):
        if i >= len(tokens) or tokens[i] != ref:
            return i
    return None


def agreement(generated: Sequence[Sequence[int]], reference: Sequence[Sequence[int]], forced: int) -> Agreement:
    """Agreement of one precision's continuations (one list per prompt) with fp32's; `forced` from
    forced_agreement."""
    firsts = [first_difference(g, r) for g, r in zip(generated, reference)]
    identical = sum(len(r) if f is None else f for f, r in zip(firsts, reference))
    return Agreement(identical, firsts, forced, sum(len(r) for r in reference))


def forced_agreement(model: Any, prompts: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> int:
    """How many of `reference`'s tokens the model would have picked greedily itself, reading each prompt and then
    its reference continuation token by token, through the same window as generation. All prompts are read
    together, as rows of one batch: they must have one length, and so must the continuations."""
    ref = torch.tensor([list(r) for r in reference], dtype=torch.long)
    dec = Decoder(model, torch.tensor([list(p) for p in prompts], dtype=torch.long))
    same = 0
    with torch.no_grad():
        for j in range(ref.size(1)):
            same += int((dec.next_logits().argmax(-1) == ref[:, j]).sum())
            dec.append(ref[:, j])
    return same


def top1(model: Any, ids: Sequence[int], batch_size: int) -> torch.Tensor:
    """The model's most likely next token at every position of `ids`, read in back-to-back windows of its
    block_size (a short last window is left out): (n_windows * block_size,)."""
    block = model.config.block_size
    n = len(ids) // block
    x = torch.tensor(list(ids[:n * block]), dtype=torch.long).view(n, block)
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size])[0].argmax(-1).flatten() for i in range(0, n, batch_size)])


def prompt_starts(n_ids: int, prompts: int, prompt_tokens: int) -> list[int]:
    """Where `prompts` prompts of prompt_tokens tokens start in a text of n_ids tokens: evenly spaced, the first
    at 0. prompt_starts(100, 4, 10) == [0, 22, 45, 67]."""
    room = n_ids - prompt_tokens
    if room < 0:
        raise SystemExit(f"the scored text has {n_ids} tokens, fewer than one prompt's {prompt_tokens}")
    return [i * room // prompts for i in range(prompts)]


class Target:
    """What is scored: the run's prepared validation split, or a text (its tokens `ids`)."""

    def __init__(self, tokenizer: Any, cfg: dict[str, Any], args: argparse.Namespace):
        self.tokenizer, self.batch_size, self.prepared, self.text = tokenizer, args.batch_size, None, None
        data = args.text or cfg.get("data")
        if not data:
            raise SystemExit("the checkpoint does not record its data: give --text FILE")
        if not args.text and cfg.get("prepared") and is_prepared(cfg["prepared"]):
            self.prepared = cfg["prepared"]
            self.ids = [int(i) for i in open_prepared(self.prepared, 1).split("val")]
            self.what = f"the validation split of {self.prepared}"
            return
        _, text = load_text(data)
        if args.text:
            fraction = args.val_fraction
            self.text = split_text(text, fraction)[1] if fraction else text
            self.text = self.text[:args.max_chars]
            part = f"the last {fraction:.0%}" if fraction else "all"
            self.what = f"{part} of {args.text} (at most {args.max_chars:,} characters)"
        else:
            fraction = cfg.get("train", {}).get("val_fraction", 0.1)
            self.text = split_text(text, fraction)[1]
            self.what = f"the validation split of {data} (the last {fraction:.0%})"
        self.ids = tokenizer.encode(self.text)

    def loss(self, model: Any) -> dict[str, Any]:
        if self.prepared:
            return evaluate_prepared(model, self.tokenizer, self.prepared, "val", self.batch_size)
        return evaluate_text(model, self.tokenizer, self.text, self.batch_size)


def load(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any], str]:
    """(model, tokenizer, cfg, where it came from) for the run directory or the --hf folder."""
    if not args.hf:
        model, tokenizer, cfg = load_checkpoint(args.run_dir, args.checkpoint)
        return model, tokenizer, cfg, str(cfg.get("path", args.run_dir))
    from tinygpt.interop.convert import import_hf  # the importer of `tinygpt import`

    with tempfile.TemporaryDirectory() as tmp:
        import_hf(args.hf, Path(tmp) / "imported")
        model, tokenizer, cfg = load_checkpoint(Path(tmp) / "imported")
    return model, tokenizer, cfg, f"{args.hf} (imported)"


def first_differences(firsts: Sequence[int | None]) -> str:
    """The "first difference" cell: each prompt's ("-": none differs); past 10 prompts, the median and range of
    those that differ and how many never do. first_differences([3, None, 7]) == "3, -, 7"."""
    if len(firsts) <= 10:
        return ", ".join("-" if f is None else str(f) for f in firsts)
    found = sorted(f for f in firsts if f is not None)
    never = f"; {len(firsts) - len(found)} never" if len(found) < len(firsts) else ""
    if not found:
        return f"none of {len(firsts)} differ"
    return f"median {found[len(found) // 2]}, {found[0]} to {found[-1]}{never}"


def table(rows: list[tuple[str, float, Agreement, float]]) -> list[str]:
    """The Markdown table: one row per precision."""
    base = rows[0][1]
    out = ["| weights | val loss | vs fp32 | identical | first difference (per prompt) | forced top-1 | text top-1 "
           "| tok/s |", "|---|---|---|---|---|---|---|---|"]
    for mode, loss, agr, speed in rows:
        firsts = first_differences(agr.first_difference)
        out.append(f"| {mode} | {loss:.4f} | {loss - base:+.5f} | {agr.identical / agr.total:.1%} | {firsts} "
                   f"| {agr.forced / agr.total:.1%} | {agr.text_same / max(agr.text_total, 1):.2%} | {speed:.0f} |")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", help="a tinygpt run or checkpoint directory")
    ap.add_argument("--hf", help="a Hugging Face GPT-2 (or Llama) folder instead of a run")
    ap.add_argument("--text", help="the text to score (default: the run's validation split; needed with --hf)")
    ap.add_argument("--val_fraction", type=float, default=0.0,
                    help="with --text: score only its last part, this fraction of it, as training splits it "
                         "(0.1: the validation split of a run trained on that text); default 0, all of it")
    ap.add_argument("--max_chars", type=int, default=200_000, help="with --text: score at most this much of it")
    ap.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    ap.add_argument("--tokens", type=int, default=1000, help="greedy tokens to compare, all prompts together "
                                                             "(default 1000)")
    ap.add_argument("--prompts", type=int, default=5, help="prompts, from evenly spaced places in the scored text")
    ap.add_argument("--prompt_tokens", type=int, default=32, help="tokens in each prompt")
    ap.add_argument("--top1_tokens", type=int, default=100_000,
                    help="text top-1: compare at most this many positions of the scored text (default 100,000)")
    ap.add_argument("--batch_size", type=int, default=8)
    args = ap.parse_args(argv)
    if (args.run_dir is None) == (args.hf is None):
        ap.error("give a run directory or --hf FOLDER (one of them)")
    if args.hf and not args.text:
        ap.error("--hf needs --text FILE: the text to score")
    if args.prompts < 1 or args.tokens < args.prompts:
        ap.error("--prompts must be at least 1 and --tokens at least --prompts")
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)

    model, tokenizer, cfg, source = load(args)
    c = model.config
    print(f"{source}: {count_params(model) / 1e6:.2f}M parameters, {c.n_layer} layers, {c.n_embd} dims, "
          f"{c.vocab_size} tokens, {c.block_size}-token window, {c.activation}, {c.norm}, {c.position} positions, "
          f"{'tied' if c.tie_embeddings else 'untied'} head", flush=True)
    target = Target(tokenizer, cfg, args)
    steps = args.tokens // args.prompts
    prompts = [target.ids[s:s + args.prompt_tokens]
               for s in prompt_starts(len(target.ids), args.prompts, args.prompt_tokens)]

    rows, reference, text_reference = [], None, None
    for mode in MODES:
        t0 = time.perf_counter()
        q = quantize(model, mode)
        res = target.loss(q)
        t1 = time.perf_counter()
        generated = [generate(q, p, steps, temperature=0) for p in prompts]
        t2 = time.perf_counter()
        if reference is None:
            reference = generated
        agr = agreement(generated, reference, forced_agreement(q, prompts, reference))
        best = top1(q, target.ids[:args.top1_tokens], args.batch_size)
        if text_reference is None:
            text_reference = best
        agr.text_same, agr.text_total = int((best == text_reference).sum()), len(best)
        rows.append((mode or "fp32", res["loss"], agr, agr.total / (t2 - t1)))
        print(f"{mode or 'fp32'}: loss {res['loss']:.4f} on {res['tokens']:,} tokens in {t1 - t0:.0f} s, "
              f"{agr.total} greedy tokens in {t2 - t1:.1f} s, all in {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"\nloss on {target.what}; greedy: {args.prompts} prompts of {args.prompt_tokens} tokens from it, "
          f"{steps} tokens each, compared with fp32's; text top-1 over {rows[0][2].text_total:,} positions\n")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
