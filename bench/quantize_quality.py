"""What int8 and bf16 weights cost in quality (models/quantize.py): validation loss in fp32, bf16 and int8, and
greedy agreement with fp32 over 1,000 generated tokens.

    python bench/quantize_quality.py RUN_DIR [--checkpoint best]       # a tinygpt run, on its own validation split
    python bench/quantize_quality.py --hf FOLDER --text FILE          # a Hugging Face GPT-2 (or Llama) folder

A run is scored on the validation split of the text it was trained on, split as in training (`tinygpt eval`'s
figure), or on --text. A Hugging Face folder (GPT-2's own 124M weights, fetched beforehand, or any model of its
shape) is imported with tinygpt.interop's import_hf into a temporary checkpoint and scored on the whole of
--text (its first --max_chars characters).

Greedy agreement, from the first --prompt_tokens tokens of the scored text:
- "free": each precision generates --tokens tokens greedily on its own; how many of them equal fp32's, and how
  long the two texts stay identical (after the first difference the texts go their own ways);
- "forced": each precision reads fp32's text and predicts every next token; the share of its most likely tokens
  that equal fp32's choice. This counts every near-tie the lower precision breaks the other way.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (bench/machine.py)

from tinygpt.data.prepare import is_prepared  # noqa: E402
from tinygpt.data.text import load_text, split_text  # noqa: E402
from tinygpt.generation.decoder import Decoder  # noqa: E402
from tinygpt.generation.generate import generate  # noqa: E402
from tinygpt.models.quantize import quantize  # noqa: E402
from tinygpt.training.evaluate import evaluate_prepared, evaluate_text  # noqa: E402
from tinygpt.training.run import load_checkpoint  # noqa: E402

MODES = (None, "bf16", "int8")


def forced_agreement(model: Any, prompt: list[int], reference: list[int]) -> int:
    """How many of `reference`'s tokens the model would have picked greedily itself, reading the reference text
    (the prompt, then reference's tokens one by one) through the same window as generation."""
    dec = Decoder(model, prompt)
    same = 0
    with torch.no_grad():
        for token in reference:
            same += int(dec.next_logits().argmax(-1).item() == token)
            dec.append(torch.tensor([token]))
    return same


def scores(model: Any, tokenizer: Any, cfg: dict[str, Any], args: argparse.Namespace) -> tuple[dict, str]:
    """(evaluate_text's figures, the scored text) for the run's validation split or --text."""
    data = args.text or cfg.get("data")
    if not data:
        raise SystemExit("the checkpoint does not record its data: give --text FILE")
    if not args.text and cfg.get("prepared") and is_prepared(cfg["prepared"]):
        res = evaluate_prepared(model, tokenizer, cfg["prepared"], "val", args.batch_size)
        ids = [int(i) for i in _prepared_val(cfg["prepared"])[:args.prompt_tokens]]
        return res, tokenizer.decode(ids)
    _, text = load_text(data)
    if args.hf or args.text:
        part = text[:args.max_chars]
    else:
        part = split_text(text, cfg.get("train", {}).get("val_fraction", 0.1))[1]
    return evaluate_text(model, tokenizer, part, args.batch_size), part


def _prepared_val(path: str) -> Any:
    from tinygpt.data.prepare import open_prepared

    return open_prepared(path, 1).split("val")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", help="a tinygpt run or checkpoint directory")
    ap.add_argument("--hf", help="a Hugging Face GPT-2 (or Llama) folder instead of a run")
    ap.add_argument("--text", help="the text to score (default: the run's validation split; needed with --hf)")
    ap.add_argument("--max_chars", type=int, default=200_000, help="with --hf or --text: score this much of it")
    ap.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    ap.add_argument("--tokens", type=int, default=1000, help="greedy tokens to compare (default 1000)")
    ap.add_argument("--prompt_tokens", type=int, default=16, help="prompt: the scored text's first tokens")
    ap.add_argument("--batch_size", type=int, default=8)
    args = ap.parse_args()
    if (args.run_dir is None) == (args.hf is None):
        ap.error("give a run directory or --hf FOLDER (one of them)")
    if args.hf and not args.text:
        ap.error("--hf needs --text FILE: the text to score")
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if args.hf:
            from tinygpt.interop.convert import import_hf  # the importer of `tinygpt import`

            import_hf(args.hf, Path(tmp) / "imported")
            model, tokenizer, cfg = load_checkpoint(Path(tmp) / "imported")
            source = args.hf
        else:
            model, tokenizer, cfg = load_checkpoint(args.run_dir, args.checkpoint)
            source = cfg.get("path", args.run_dir)
    c = model.config
    print(f"{source}: {c.n_layer} layers, {c.n_embd} dims, {c.vocab_size} tokens, {c.activation}, "
          f"{c.position} positions, {'tied' if c.tie_embeddings else 'untied'} head", flush=True)

    rows, reference, prompt = [], None, None
    for mode in MODES:
        t0 = time.perf_counter()
        q = quantize(model, mode)
        res, text = scores(q, tokenizer, cfg, args)
        if prompt is None:
            prompt = tokenizer.encode(text)[:args.prompt_tokens]
        tokens = generate(q, prompt, args.tokens, temperature=0)
        if reference is None:
            reference = tokens
        same = sum(a == b for a, b in zip(tokens, reference))
        prefix = next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), len(reference))
        forced = forced_agreement(q, prompt, reference)
        rows.append((mode or "fp32", res["loss"], res["tokens"], same, prefix, forced, time.perf_counter() - t0))
        print(f"{mode or 'fp32'} done in {rows[-1][-1]:.0f} s", flush=True)

    base = rows[0][1]
    n = len(reference)
    print(f"\nloss on {rows[0][2]:,} tokens; greedy agreement with fp32 over {n} tokens after a "
          f"{len(prompt)}-token prompt")
    print(f"{'weights':<8} {'loss':>8} {'vs fp32':>9} {'free: same':>11} {'identical for':>14} {'forced: same':>13}")
    for mode, loss, _, same, prefix, forced, _ in rows:
        print(f"{mode:<8} {loss:8.4f} {loss - base:+9.4f} {same / n:11.1%} {prefix:>10} tok {forced / n:13.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
