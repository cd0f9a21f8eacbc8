"""Generation speed: tinygpt's KV cache vs its uncached reference path, and vs nanoGPT's sample.py.

A shakespeare_char-sized model (6 layers, 6 heads, 384 dims, block 256, 65 characters), batch 1, CPU,
500 new tokens from a one-token prompt (so generation runs past block_size). Our two paths must produce
the same greedy tokens; the script checks it. Beside them: the Decoder (the engine before the batched one,
kept as a reference; same tokens, checked) and 16 sampled rows of 16 different prompt lengths on the batched
engine at once (total tokens/s, and its ratio to one row's). Medians of --repeats runs, alternating.

    python bench/generate_speed.py [--repeats 3] [--tokens 500] [--checkpoint RUN_DIR]
    NANOGPT_DIR=/path/to/nanoGPT python bench/generate_speed.py --nanogpt_ckpt DIR_WITH_ckpt.pt

nanoGPT's sample.py samples (temperature 0.8, top_k 200 by default) and recomputes the whole window of up
to block_size tokens for every new token; its speed does not depend on which tokens it picks.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tinygpt.config import ModelConfig  # noqa: E402
from tinygpt.generation.decoder import Decoder  # noqa: E402
from tinygpt.generation.generate import generate, generate_tokens  # noqa: E402
from tinygpt.models import GPT  # noqa: E402


def timed(model, prompt, n, **kw) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = generate(model, prompt, n, **kw)
    return n / (time.perf_counter() - t0), out


def timed_decoder(model, prompt, n) -> tuple[float, list[int]]:
    """The previous engine (rows of one length), greedy."""
    t0 = time.perf_counter()
    dec = Decoder(model, prompt)
    for _ in dec.generate(n, temperature=0):
        pass
    return n / (time.perf_counter() - t0), dec.new_tokens[0].tolist()


def timed_rows(model, n, rows=16) -> float:
    """Total tokens/s of `rows` sampled rows of different prompt lengths, one engine step each per token."""
    prompts = [[i % 65] * (1 + 3 * i) for i in range(rows)]
    t0 = time.perf_counter()
    for _ in generate_tokens(model, prompts, n, temperature=0.8, top_k=200, seed=0):
        pass
    return rows * n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--checkpoint", help="a tinygpt run to use instead of random weights")
    ap.add_argument("--nanogpt", default=None, help="nanoGPT checkout (default $NANOGPT_DIR)")
    ap.add_argument("--nanogpt_ckpt", help="a nanoGPT out_dir holding ckpt.pt of the same size")
    args = ap.parse_args()

    if args.checkpoint:
        from tinygpt.training.run import load_checkpoint
        model, _, _ = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0)).eval()
    prompt = [0]
    timed(model, prompt, 20, temperature=0)  # warm-up
    cached, uncached, sampled, ng, decoder, batch16 = [], [], [], [], [], []
    for rep in range(args.repeats):
        tps, a = timed(model, prompt, args.tokens, temperature=0, use_cache=True)
        cached.append(tps)
        tps, d = timed_decoder(model, prompt, args.tokens)
        decoder.append(tps)
        if a != d:
            print("MISMATCH: the engine and the Decoder give different greedy tokens", flush=True)
            return 1
        batch16.append(timed_rows(model, args.tokens))
        tps, b = timed(model, prompt, args.tokens, temperature=0, use_cache=False)
        uncached.append(tps)
        if a != b:
            print("MISMATCH: cached and uncached greedy tokens differ", flush=True)
            return 1
        tps, _ = timed(model, prompt, args.tokens, temperature=0.8, top_k=200, seed=rep)
        sampled.append(tps)
        if args.nanogpt_ckpt:
            from nanogpt import run_nanogpt_sample
            r = run_nanogpt_sample(args.nanogpt, args.nanogpt_ckpt, max_new_tokens=args.tokens, seed=rep)
            ng.append(r["tokens_per_sec"])
        print(f"repeat {rep + 1}: cached {cached[-1]:.0f} tok/s, uncached {uncached[-1]:.0f} tok/s, "
              f"cached+sampling {sampled[-1]:.0f} tok/s, Decoder {decoder[-1]:.0f} tok/s, "
              f"16 rows {batch16[-1]:.0f} tok/s in all" + (f", nanoGPT sample.py {ng[-1]:.0f} tok/s" if ng else ""),
              flush=True)
    c, u, s, d, b = (statistics.median(x) for x in (cached, uncached, sampled, decoder, batch16))
    print(f"median over {args.repeats}: KV cache {c:.0f} tok/s, uncached {u:.0f} tok/s "
          f"({c / u:.1f}x), identical greedy tokens: yes; with temperature 0.8 / top-k 200: {s:.0f} tok/s")
    print(f"the Decoder (previous engine) {d:.0f} tok/s (engine / Decoder {c / d:.2f}x, same tokens); 16 sampled rows "
          f"of different lengths together: {b:.0f} tok/s in all, {b / s:.1f}x one sampled row")
    if ng:
        n = statistics.median(ng)
        print(f"nanoGPT sample.py {n:.0f} tok/s -> tinygpt KV cache (sampling, same settings) is {s / n:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
