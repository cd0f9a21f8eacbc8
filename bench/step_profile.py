"""Where one CPU training step of our GPT spends its time, and how fast it could get if only matrix products cost.

Builds the model for a named shape (the baby of nanoGPT's README CPU example, or the shakespeare_char preset),
runs the training loop's own pieces (autocast, the fused AdamW of tinygpt.training.optim, training.steady_heap) on random
tokens, and profiles `--steps` steps with torch.profiler. Prints the median step, the operators by self time,
and the share of matrix products (mm, addmm, bmm, baddbmm). Matrix products run through the same BLAS kernels
in every PyTorch project, so `step / matmul time` bounds what any rewrite of the rest can gain at this
precision on this CPU; with `--versus MS` (another project's step, e.g. nanoGPT's from
bench/train_vs_nanogpt.py) it prints the ratio against that step which the bound allows.

    python bench/step_profile.py --config baby --dtype float32 [--steps 20] [--versus 40.4]

To imitate an AVX2-only CPU on a newer one, cap each library's instruction set:
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/step_profile.py ...
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_name  # noqa: E402

from tinygpt.config import ModelConfig, TrainConfig  # noqa: E402
from tinygpt.device import autocast  # noqa: E402
from tinygpt.models import build_model  # noqa: E402
from tinygpt.training.optim import configure_optimizer  # noqa: E402
from tinygpt.training.steady_heap import steady_heap  # noqa: E402

# n_layer, n_head, n_embd, block_size, batch_size, dropout (as bench/train_vs_nanogpt.py runs them)
SHAPES = {"baby": (4, 4, 128, 64, 12, 0.0), "preset": (6, 6, 384, 256, 64, 0.2)}
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(SHAPES), default="baby", help="the model and batch (default baby)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the step's precision (default float32)")
    ap.add_argument("--steps", type=int, default=20,
                    help="timed steps, then as many profiled ones, after 10 warm-up steps (default 20)")
    ap.add_argument("--rows", type=int, default=12, help="operators to list (default 12)")
    ap.add_argument("--versus", type=float, default=None, help="another project's step in ms, to bound the ratio")
    args = ap.parse_args()

    n_layer, n_head, n_embd, block, batch, dropout = SHAPES[args.config]
    torch.manual_seed(0)
    mcfg = ModelConfig(vocab_size=65, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block,
                       dropout=dropout)
    model = build_model(mcfg).train()
    opt = configure_optimizer(model, TrainConfig(), "cpu")
    x, y = torch.randint(0, 65, (batch, block)), torch.randint(0, 65, (batch, block))
    dtype = getattr(torch, args.dtype)

    def step() -> None:
        with autocast("cpu", dtype):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    from torch.profiler import ProfilerActivity, profile
    with steady_heap("cpu"):
        for _ in range(10):
            step()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - t0))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()

    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1000 / args.steps  # ms per step, as profiled
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1000 / args.steps
    step_ms = statistics.median(times)
    print(f"# {cpu_name()}, ATen kernels {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}")
    print(f"[{args.config}, {args.dtype}] step {step_ms:.1f} ms (median of {args.steps}; "
          f"{total:.1f} ms per step under the profiler)")
    print(f"{'operator':<58} {'ms/step':>8} {'share':>6}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]:
        ms = e.self_cpu_time_total / 1000 / args.steps
        print(f"{e.key[:58]:<58} {ms:8.2f} {100 * ms / total:5.1f}%")
    print(f"matrix products: {matmul:.1f} of {total:.1f} ms ({100 * matmul / total:.0f} %): with everything else "
          f"free, a step could be at most {total / matmul:.2f}x as fast")
    if args.versus:
        print(f"against a {args.versus:.1f} ms step elsewhere: at most {args.versus / (step_ms * matmul / total):.2f}x "
              f"(now {args.versus / step_ms:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
