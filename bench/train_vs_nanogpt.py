"""Training throughput (and, with --full, the val loss at step 2000) of tinygpt vs nanoGPT, side by side.

Both run as subprocesses of this script on the same machine, alternating, with the same hyperparameters;
per-iteration times exclude evaluation steps and the first 5 iterations; we report medians and ratios, the
precision tinygpt trained in (`--dtype=auto` unless --ours_extra says otherwise), and what each achieved in
GFLOP/s (bench/gpu.py's 6N + 12·L·H·Q·T per token, as nanoGPT's MFU estimate) against this machine's measured
fp32 and bf16 matrix-product peaks.

    NANOGPT_DIR=/path/to/nanoGPT python bench/train_vs_nanogpt.py [--config baby|preset|both] [--iters 200]
        [--repeats 3] [--full]

`--full` runs the README's 2000-step "baby" command to the end in both and compares val loss at step 2000.
nanoGPT is never vendored: clone it yourself (see bench/nanogpt.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name, matmul_peak  # noqa: E402
from nanogpt import BABY_CPU_OVERRIDES, prepare_nanogpt_data, resolve_nanogpt_dir, run_nanogpt_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SKIP_FIRST = 5
SHAPES = {"baby": (4, 4, 128, 64), "preset": (6, 6, 384, 256)}  # n_layer, n_head, n_embd, block_size


def model_flops_per_token(name: str, vocab_size: int = 65) -> float:
    """bench/gpu.py's 6N + 12·L·H·Q·T for the model `name` trains (N: parameters without position embeddings)."""
    from gpu import flops_per_token  # bench/gpu.py

    from tinygpt.config import ModelConfig
    from tinygpt.models import build_model, count_params
    n_layer, n_head, n_embd, block = SHAPES[name]
    cfg = ModelConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block)
    return flops_per_token(cfg, count_params(build_model(cfg), non_embedding=True))


CONFIGS = {
    # nanoGPT's README CPU example ("baby GPT"), the command our README quotes
    "baby": {"nanogpt": [o for o in BABY_CPU_OVERRIDES if not o.startswith(("--max_iters", "--lr_decay_iters"))],
             "ours": ["--preset", "shakespeare_char", "--device=cpu", "--compile=False", "--eval_iters=20",
                      "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                      "--n_embd=128", "--dropout=0.0"]},
    # the shakespeare_char recipe as is: 6 layers, 6 heads, 384 dims, block 256, batch 64, dropout 0.2
    "preset": {"nanogpt": ["--device=cpu", "--compile=False", "--log_interval=1", "--eval_iters=1",
                           "--always_save_checkpoint=False"],
               "ours": ["--preset", "shakespeare_char", "--device=cpu", "--compile=False", "--log_interval=1",
                        "--eval_iters=1"]},
}


def run_ours(flags: list[str], iters: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(DATA), "--out", str(out), "--overwrite",
           "--quiet", *flags, f"--max_iters={iters}", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"tinygpt failed: {r.stderr[-2000:]}")
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    dts = [ln["dt_ms"] for ln in lines if "dt_ms" in ln and ln["step"] > SKIP_FIRST and "val_loss" not in ln]
    evals = [ln for ln in lines if "val_loss" in ln]
    precision = next((ln.split()[1].rstrip(",") for ln in r.stderr.splitlines() if ln.startswith("precision:")),
                     next((a.split("=", 1)[1] for a in extra if a.startswith("--dtype=")), "auto"))
    return {"median_ms": statistics.median(dts), "precision": precision, "wall_s": time.perf_counter() - t0,
            "last_val_loss": evals[-1]["val_loss"], "last_eval_step": evals[-1]["step"], "stderr": r.stderr}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", default=None)
    ap.add_argument("--config", choices=["baby", "preset", "both"], default="both")
    ap.add_argument("--iters", type=int, default=0, help="iterations per timing run (default: 200 baby, 25 preset)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also run the 2000-step baby command to the end in both")
    ap.add_argument("--ours_extra", nargs="*", default=[], help="extra flags for tinygpt (e.g. --dtype=bfloat16)")
    args = ap.parse_args()
    ng = resolve_nanogpt_dir(args.nanogpt)
    prepare_nanogpt_data(ng, DATA)
    tmp = Path(tempfile.mkdtemp(prefix="tinygpt_bench_"))
    import torch
    # an AVX2-only CPU can be imitated on a newer one by capping each library's instruction set:
    # ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 (docs/LOG.md)
    caps = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
            if k in os.environ]
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, ATen kernels "
          f"{torch.backends.cpu.get_cpu_capability()}" + (f" ({' '.join(caps)})" if caps else ""), flush=True)
    names = ["baby", "preset"] if args.config == "both" else [args.config]
    achieved: dict[str, tuple[float, float, str]] = {}
    for name in names:
        iters = args.iters or (200 if name == "baby" else 25)
        c = CONFIGS[name]
        ng_ms, our_ms = [], []
        for rep in range(args.repeats):
            r = run_nanogpt_train(ng, c["nanogpt"] + [f"--max_iters={iters}", f"--lr_decay_iters={iters}",
                                                      f"--eval_interval={iters + 1000}"], tmp / f"ng_{name}",
                                  skip_first=SKIP_FIRST)
            ng_ms.append(r["summary"]["median_ms"])
            o = run_ours(c["ours"], iters, tmp / f"ours_{name}",
                         [f"--lr_decay_iters={iters}", f"--eval_interval={iters + 1000}", *args.ours_extra])
            our_ms.append(o["median_ms"])
            print(f"[{name}] repeat {rep + 1}: nanoGPT {ng_ms[-1]:.1f} ms/iter, tinygpt {our_ms[-1]:.1f} ms/iter "
                  f"({o['precision']})", flush=True)
        tokens = r["tokens_per_iter"]
        precision = o["precision"]
        n, o = statistics.median(ng_ms), statistics.median(our_ms)
        print(f"[{name}] {tokens} tokens/iter | nanoGPT {n:.1f} ms/iter = {tokens / n * 1000:,.0f} tok/s | "
              f"tinygpt {o:.1f} ms/iter = {tokens / o * 1000:,.0f} tok/s | ratio {n / o:.2f}x", flush=True)
        fpt = model_flops_per_token(name)
        achieved[name] = (tokens * fpt / 1e6 / n, tokens * fpt / 1e6 / o, precision)
    peaks = {"fp32": matmul_peak()}  # measured after the runs, on the same idle machine
    from tinygpt.device import cpu_has_fast_bf16
    if cpu_has_fast_bf16():
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    print("matrix-product peak (2048³, best of 7): " + ", ".join(f"{k} {v:.3g} GFLOP/s" for k, v in peaks.items()))
    for name, (ng_gf, our_gf, precision) in achieved.items():
        # against the peak of the precision each trained in (nanoGPT: fp32 on CPU); a bf16 run against both
        ours = [k for k in peaks if k == "fp32" or precision.startswith("bfloat16")]
        print(f"[{name}] achieved: nanoGPT {ng_gf:.0f} GFLOP/s ({100 * ng_gf / peaks['fp32']:.0f} % of the fp32 peak), "
              f"tinygpt {our_gf:.0f} GFLOP/s (" + ", ".join(f"{100 * our_gf / peaks[k]:.0f} % of the {k} peak"
                                                         for k in ours) + ")", flush=True)
    if args.full:
        r = run_nanogpt_train(ng, BABY_CPU_OVERRIDES, tmp / "ng_full", skip_first=SKIP_FIRST)
        o = run_ours(CONFIGS["baby"]["ours"], 2000, tmp / "ours_full", ["--lr_decay_iters=2000"])
        ev = r["evals"][-1]
        print(f"[baby, 2000 steps] nanoGPT val loss {ev['val_loss']:.4f} at step {ev['step']} "
              f"({r['summary']['median_ms']:.1f} ms/iter, {r['wall_s']:.0f} s) | tinygpt val loss "
              f"{o['last_val_loss']:.4f} at step {o['last_eval_step']} ({o['median_ms']:.1f} ms/iter, "
              f"{o['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
