"""The machine a benchmark ran on, in one line: the CPU's model name and the units that decide its speed."""
from __future__ import annotations

import platform
import subprocess


def cpu_name() -> str:
    """`lscpu`'s model name and which of AVX2, AVX512-BF16 and AMX the CPU has, e.g. "AMD EPYC (avx2, avx512_bf16)"."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    return f"{name} ({', '.join(f for f in ('avx2', 'avx512_bf16', 'amx_bf16') if f in flags)})"


def matmul_peak(dtype=None, n: int = 2048, repeats: int = 7) -> float:
    """The machine's own matrix-product peak: GFLOP/s of the fastest of `repeats` n×n×n products in `dtype`
    (fp32 by default) on the threads torch uses. Run it on an idle machine, like every timing."""
    import time

    import torch
    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9
