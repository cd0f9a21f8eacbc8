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
