"""GPU throughput of our own GPT code: a GPT-2 124M-shaped training step and KV-cache generation.

The model is tinygpt's GPT at GPT-2 small's shape (12 layers, 12 heads, 768 dims, block 1024, vocabulary
50304, biases on), trained in bf16 autocast with torch.compile, attention through
scaled_dot_product_attention (a fused kernel) and the library's fused AdamW, on random tokens
drawn on the GPU: micro-batch 32 x 1024 with 16 accumulation steps, 524,288 tokens per optimizer step.
(Which fused attention kernel SDPA picks is torch's choice; the table names it.)

Reported: tokens/s of the training step (median over the timed steps, after warm-up and compilation),
MFU against the GPU's datasheet bf16 dense peak and against a bf16 matrix product measured here, peak
memory, and greedy generation through the KV cache (batch 1 and 16, 256 new tokens), also with SDPA
limited to its flash and memory-efficient kernels from outside (the library already leaves cuDNN attention out
of cached attention, so the two should agree), plus a profile of one decode step (docs/LOG.md, 2026-11-28,
says what these showed on an H200, before that change).
FLOPs per token follow nanoGPT / PaLM: 6 N + 12 L H Q T (N: parameters without the position embedding;
the attention term counts the full T x T score matrix, as they do, although causal kernels skip half).

    python bench/gpu.py                      # full run on the GPU: about 2 minutes on one H200
    python bench/gpu.py --smoke --device cpu # tiny model, a few steps: checks the script anywhere
    python bench/gpu.py --no_compile --steps 10 --batch 16 --accum 32 --peak_tflops 989

Prints one table, then the same figures as one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygpt.config import ModelConfig, TrainConfig  # noqa: E402
from tinygpt.device import autocast, choose_device, choose_dtype  # noqa: E402
from tinygpt.models import build_model, count_params  # noqa: E402

try:  # the optimizer set-up may live in its own module
    from tinygpt.training.optim import configure_optimizer  # noqa: E402
except ImportError:
    from tinygpt.training.loop import configure_optimizer  # noqa: E402
try:  # the generation API may be reshaped; the training figures stand without it
    from tinygpt.generation.generate import generate_tokens  # noqa: E402
except ImportError:
    generate_tokens = None

GPT2_SMALL = dict(model="gpt", vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                  dropout=0.0, bias=True)
SMOKE = dict(model="gpt", vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=True)

# Datasheet dense bf16 peaks (FLOP/s), most specific name first. NOTE: the SXM H100 and the H200 share
# the chip and its 989 TFLOP/s; PCIe and NVL boards run at lower clocks.
PEAK_BF16 = [("h100 pcie", 756e12), ("h100 nvl", 835e12), ("h200 nvl", 835e12), ("gh200", 989e12),
             ("h100", 989e12), ("h200", 989e12), ("b200", 2250e12), ("a100", 312e12), ("l40s", 362e12)]


def datasheet_peak(device_name: str) -> float | None:
    """Dense bf16 FLOP/s for a GPU name, or None. datasheet_peak('NVIDIA H200') == 989e12."""
    name = device_name.lower()
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token (forward + backward): 6 N + 12 L H Q T, as nanoGPT's estimate_mfu."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * cfg.block_size


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_matmul(device: str, dtype: torch.dtype, n: int, reps: int = 20) -> float:
    """Achieved FLOP/s of an n x n x n matrix product on random data (median of `reps` after warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(reps + 3):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def train_step(model, optimizer, cfg: ModelConfig, batch: int, accum: int, device: str, dtype: torch.dtype,
               gen: torch.Generator, grad_clip: float) -> float:
    """One optimizer step over `accum` micro-batches of random tokens drawn on the device; returns the loss.
    Mirrors the library's loop (autocast, loss / accum, clipping, fused AdamW) without its per-micro-step
    .item() synchronisation: one sync per step, when the loss is read."""
    total = torch.zeros((), device=device)
    for _ in range(accum):
        data = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size + 1), device=device, generator=gen)
        x, y = data[:, :-1], data[:, 1:]
        with autocast(device, dtype):
            _, loss = model(x, y)
            loss = loss / accum
        loss.backward()
        total += loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total.item()


def time_steps(step, n: int, max_seconds: float) -> tuple[list[float], list[float]]:
    """Run step() up to n times (stopping once max_seconds have passed); return step times and losses."""
    times, losses = [], []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        losses.append(step())  # step() ends with .item(): the device has finished
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    return times, losses


def time_generation(model, vocab_size: int, batch: int, new_tokens: int, prompt_len: int, device: str) -> float:
    """Greedy KV-cache generation: new tokens per second over the whole batch (prefill included)."""
    gen = torch.Generator(device=device).manual_seed(batch)
    prompt = torch.randint(0, vocab_size, (batch, prompt_len), device=device, generator=gen)
    for _ in generate_tokens(model, prompt, 8, temperature=0):  # warm-up: kernels, allocator
        pass
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in generate_tokens(model, prompt, new_tokens, temperature=0):
        n += 1
    sync(device)
    return batch * n / (time.perf_counter() - t0)


def tiny_launch_us(device: str, n: int = 2000) -> float:
    """Wall time per launch of a one-element kernel, launched back to back: the floor for any step
    made of many small kernels (a decode step at batch 1 is a few hundred of them)."""
    x = torch.zeros(1, device=device)
    for _ in range(100):
        x.add_(1)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    sync(device)
    return (time.perf_counter() - t0) / n * 1e6


def profile_decode(model, vocab_size: int, device: str, new_tokens: int = 16) -> dict[str, float]:
    """Kernels launched and device-busy time per generated token (batch 1), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    prompt = torch.randint(0, vocab_size, (1, 16), device=device)
    for _ in generate_tokens(model, prompt, 4, temperature=0):
        pass
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in generate_tokens(model, prompt, new_tokens, temperature=0):
            pass
        sync(device)
    ops = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(e.time_range.elapsed_us() for e in ops)
    return {"kernels_per_token": len(ops) / new_tokens, "busy_ms_per_token": busy_us / new_tokens / 1000}


def sdpa_kernel_used(device: str, dtype: torch.dtype, shape: tuple[int, int, int, int], t_k: int,
                     causal: bool) -> str:
    """Which kernel F.scaled_dot_product_attention dispatches to for q (B, nh, Tq, hs) = `shape` and
    keys/values of t_k positions."""
    from torch.profiler import ProfilerActivity, profile
    B, nh, _, hs = shape
    q = torch.randn(shape, device=device, dtype=dtype)
    k, v = (torch.randn(B, nh, t_k, hs, device=device, dtype=dtype) for _ in range(2))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    names = [e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product_")]
    return names[0].removeprefix("aten::_scaled_dot_product_") if names else "math (unfused)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny model, a few steps: seconds, CPU or GPU")
    ap.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                    help="autocast dtype; auto: tinygpt.device.choose_dtype's choice (bf16 on a GPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 30; smoke 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first, compilation included (default 3)")
    ap.add_argument("--max_seconds", type=float, default=120.0, help="stop the timed steps after this long")
    ap.add_argument("--batch", type=int, default=None, help="micro-batch in sequences (default 32; smoke 4)")
    ap.add_argument("--accum", type=int, default=None, help="micro-batches per optimizer step (default 16; smoke 2)")
    ap.add_argument("--no_compile", action="store_true", help="run the model eagerly")
    ap.add_argument("--eager_steps", type=int, default=None,
                    help="after the compiled run, time this many eager steps for comparison (default 5; 0: skip)")
    ap.add_argument("--gen_tokens", type=int, default=None, help="new tokens per generation (default 256; smoke 16)")
    ap.add_argument("--gen_batches", default=None, help="generation batch sizes, comma separated (default 1,16)")
    ap.add_argument("--peak_tflops", type=float, default=None, help="override the datasheet bf16 dense peak")
    args = ap.parse_args(argv)

    smoke = args.smoke
    pick = (lambda full, small, given: given if given is not None else (small if smoke else full))
    steps, warmup = pick(30, 3, args.steps), pick(3, 1, args.warmup)
    batch, accum = pick(32, 4, args.batch), pick(16, 2, args.accum)
    gen_tokens = pick(256, 16, args.gen_tokens)
    gen_batches = [int(b) for b in (args.gen_batches or ("1,4" if smoke else "1,16")).split(",")]
    device = choose_device(args.device)
    on_gpu = device.startswith("cuda")
    dtype = choose_dtype(args.dtype, device)
    # compiling on a CPU needs a C++ toolchain and minutes; the smoke run there checks everything else
    compile_model = not args.no_compile and (on_gpu or not smoke)
    eager_steps = pick(5, 1, args.eager_steps) if compile_model else 0

    gpu_name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    peak_spec = args.peak_tflops * 1e12 if args.peak_tflops else datasheet_peak(gpu_name) if on_gpu else None
    print(f"device: {gpu_name} | torch {torch.__version__} | dtype {str(dtype).replace('torch.', '')} | "
          f"compile {'on' if compile_model else 'off'}", flush=True)

    matmul_n = 512 if smoke else 8192
    peak_measured = measure_matmul(device, dtype, matmul_n)
    print(f"matmul {matmul_n}^3: {peak_measured / 1e12:.3g} TFLOP/s", flush=True)

    cfg = ModelConfig(**(SMOKE if smoke else GPT2_SMALL))
    train_cfg = TrainConfig(learning_rate=6e-4, min_lr=6e-5, beta1=0.9, beta2=0.95, weight_decay=0.1,
                            grad_clip=1.0, device=device)
    torch.manual_seed(1337)
    raw = build_model(cfg).to(device)
    n_params = count_params(raw, non_embedding=True)
    optimizer = configure_optimizer(raw, train_cfg, device)
    fused = any(g.get("fused") for g in optimizer.param_groups) or bool(optimizer.defaults.get("fused"))
    model = torch.compile(raw) if compile_model else raw
    gen = torch.Generator(device=device).manual_seed(0)

    def step_with(m):
        return lambda: train_step(m, optimizer, cfg, batch, accum, device, dtype, gen, train_cfg.grad_clip)

    notes = []
    while True:  # NOTE: a failed compilation or an out-of-memory error must not lose a whole GPU run
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        try:
            warm_times, first_losses = time_steps(step_with(model), warmup, float("inf"))
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch, accum = batch // 2, accum * 2  # the same tokens per step in smaller pieces
            notes.append(f"out of memory: micro-batch halved to {batch}")
        except Exception as e:  # noqa: BLE001
            if not compile_model:
                raise
            model, compile_model, eager_steps = raw, False, 0
            notes.append(f"torch.compile failed, ran eagerly: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        print(notes[-1], flush=True)
        optimizer.zero_grad(set_to_none=True)
        torch._dynamo.reset()
        if on_gpu:
            torch.cuda.empty_cache()
    warmup_s = time.perf_counter() - t0
    print(f"warm-up: {warmup} step(s) in {warmup_s:.1f} s (first step {warm_times[0]:.1f} s"
          f"{', compilation included' if compile_model else ''}), loss {first_losses[0]:.3f}", flush=True)
    times, losses = time_steps(step_with(model), steps, args.max_seconds)
    peak_mem = torch.cuda.max_memory_allocated(device) if on_gpu else None
    tokens_per_step = batch * cfg.block_size * accum
    step_s = statistics.median(times)
    tok_s = tokens_per_step / step_s
    fpt = flops_per_token(cfg, n_params)
    achieved = fpt * tok_s
    print(f"timed: {len(times)} steps, median {step_s * 1000:.0f} ms, {tok_s:,.0f} tokens/s, "
          f"loss {losses[-1]:.3f}", flush=True)

    eager_tok_s = None
    if eager_steps:
        eager_times, _ = time_steps(step_with(raw), eager_steps + 1, args.max_seconds)
        eager_tok_s = tokens_per_step / statistics.median(eager_times[1:] or eager_times)

    gen_rates: dict[int, float] = {}
    decode: dict[str, float] = {}
    gen_rates_no_cudnn: dict[int, float] = {}
    kernels: dict[str, str] = {}
    if generate_tokens is not None:
        gen_model = copy.deepcopy(raw).to(dtype).eval()  # served in the training precision's low dtype
        for b in gen_batches:
            gen_rates[b] = time_generation(gen_model, cfg.vocab_size, b, gen_tokens, 16, device)
        if on_gpu:  # SDPA may pick cuDNN attention for bf16, which builds a plan per new key length; the library
            # leaves it out of cached attention (models/attention_kernels.py), so this row checks that: it should agree
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
                for b in gen_batches:
                    gen_rates_no_cudnn[b] = time_generation(gen_model, cfg.vocab_size, b, gen_tokens, 16, device)
            train_q = (batch, cfg.n_head, cfg.block_size, cfg.head_size)
            kernels = {"training": sdpa_kernel_used(device, dtype, train_q, cfg.block_size, True),
                       "decode": sdpa_kernel_used(device, dtype, (1, cfg.n_head, 1, cfg.head_size),
                                                  16 + gen_tokens, False)}
        if on_gpu:  # why batch-1 decoding runs at the speed it does
            try:
                decode = profile_decode(gen_model, cfg.vocab_size, device)
            except Exception as e:  # noqa: BLE001  (profiling is a diagnosis, never a reason to fail)
                notes.append(f"decode profile failed: {type(e).__name__}: {e}")
        del gen_model
    launch_us = tiny_launch_us(device) if on_gpu else None

    mfu_spec = achieved / peak_spec if peak_spec else None
    mfu_meas = achieved / peak_measured
    pct = (lambda v: f"{100 * v:.1f} %" if v is not None else "n/a")
    rows = [
        ("GPU", gpu_name), ("torch", torch.__version__),
        ("model", f"GPT {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}d, block {cfg.block_size}, vocab {cfg.vocab_size}"),
        ("parameters (no wpe)", f"{n_params:,}"),
        ("precision / compile / attention", f"{str(dtype).replace('torch.', '')} autocast / "
                                            f"{'torch.compile' if compile_model else 'eager'} / SDPA causal"),
        ("optimizer", f"AdamW{' (fused)' if fused else ''}, grad clip {train_cfg.grad_clip}"),
        ("tokens per step", f"{tokens_per_step:,} = {batch} x {cfg.block_size} x {accum} accum"),
        ("compile + warm-up" if compile_model else "warm-up",
         f"{warmup_s:.1f} s for {warmup} step(s) (first {warm_times[0]:.1f} s)"),
        ("step time (median)", f"{step_s * 1000:.1f} ms over {len(times)} steps "
                               f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})"),
        ("training tokens/s", f"{tok_s:,.0f}"),
        ("FLOPs per token", f"{fpt / 1e9:.3f} GFLOP (6N + 12 L H Q T)"),
        ("achieved", f"{achieved / 1e12:.3g} TFLOP/s"),
        ("bf16 peak: datasheet", f"{peak_spec / 1e12:.0f} TFLOP/s" if peak_spec else "n/a (use --peak_tflops)"),
        ("bf16 peak: measured matmul", f"{peak_measured / 1e12:.3g} TFLOP/s ({matmul_n}^3, random data)"),
        ("MFU vs datasheet", pct(mfu_spec)),
        ("MFU vs measured matmul", pct(mfu_meas)),
        ("peak memory (allocated)", f"{peak_mem / 2**30:.1f} GiB" if peak_mem is not None else "n/a (cpu)"),
        ("eager training tokens/s", f"{eager_tok_s:,.0f} over {eager_steps} steps" if eager_tok_s else "not run"),
        ("loss first / last", f"{first_losses[0]:.3f} / {losses[-1]:.3f} (random tokens: ln V = "
                              f"{torch.log(torch.tensor(float(cfg.vocab_size))).item():.3f})"),
    ]
    for b, r in gen_rates.items():
        rows.append((f"KV generation, batch {b}", f"{r:,.0f} tokens/s ({gen_tokens} new, greedy, "
                                                   f"{str(dtype).replace('torch.', '')} weights)"))
    for b, r in gen_rates_no_cudnn.items():
        rows.append((f"KV generation, batch {b}, SDPA", f"{r:,.0f} tokens/s with flash/efficient kernels only "
                                                       f"(cuDNN attention excluded)"))
    if kernels:
        rows.append(("SDPA kernel PyTorch picks", f"training shape: {kernels['training']}; decode shape: "
                                                  f"{kernels['decode']} (the library excludes cuDNN there)"))
    if decode and 1 in gen_rates:
        rows.append(("decode step, batch 1", f"{1000 / gen_rates[1]:.2f} ms wall per token; "
                     f"{decode['kernels_per_token']:.0f} device ops, {decode['busy_ms_per_token']:.2f} ms GPU busy"))
    if launch_us is not None:
        rows.append(("tiny kernel, back to back", f"{launch_us:.1f} us per launch"))
    if generate_tokens is None:
        rows.append(("KV generation", "skipped: tinygpt.generation.generate.generate_tokens not found"))
    rows += [("note", n) for n in notes]
    width = max(len(k) for k, _ in rows)
    print()
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    result = {"gpu": gpu_name, "torch": torch.__version__, "smoke": smoke, "compile": compile_model,
              "dtype": str(dtype).replace("torch.", ""), "params_no_wpe": n_params, "batch": batch,
              "accum": accum, "tokens_per_step": tokens_per_step, "timed_steps": len(times),
              "step_ms_median": step_s * 1000, "tokens_per_s": tok_s, "flops_per_token": fpt,
              "achieved_tflops": achieved / 1e12, "peak_tflops_datasheet": peak_spec / 1e12 if peak_spec else None,
              "peak_tflops_matmul": peak_measured / 1e12, "mfu_datasheet": mfu_spec, "mfu_matmul": mfu_meas,
              "peak_mem_gib": peak_mem / 2**30 if peak_mem is not None else None, "warmup_s": warmup_s,
              "eager_tokens_per_s": eager_tok_s, "loss_last": losses[-1],
              "gen_tokens": gen_tokens, "gen_tokens_per_s": {str(b): r for b, r in gen_rates.items()},
              "gen_tokens_per_s_no_cudnn": {str(b): r for b, r in gen_rates_no_cudnn.items()},
              "sdpa_kernel": kernels, "decode_batch1": decode, "tiny_launch_us": launch_us, "notes": notes}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
