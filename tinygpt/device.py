"""Hardware choices in one place: which device, which training precision, the autocast context."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch


def choose_device(name: str = "auto") -> str:
    """'auto' picks cuda > mps > cpu; any explicit name is checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps") or (kind != "cuda" and ":" in name):
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA GPU is available (use device cpu)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps was asked for but MPS is not available (use device cpu)")
    return name


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX). Without either, PyTorch
    emulates bf16 matrix products, many times slower than fp32."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, c, lambda: False)() for c in checks)


def choose_dtype(name: str, device: str, time_step: Callable[[torch.dtype], float] | None = None) -> torch.dtype:
    """'auto': bf16 autocast on CUDA GPUs that support it (else fp16); fp32 on MPS and on CPUs without native
    bf16 matrix units. On CPUs with them (AVX512-BF16 or AMX), bf16 wins for large matrices but can lose for
    small ones, where the casts cost more than the products save; so when the caller
    can time a real training step (`time_step(dtype) -> seconds`), the faster of fp32 and bf16 is taken
    (`fastest`), and bf16 without a probe."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name != "auto":
        dtype = table[name]
        if dtype == torch.float16 and device.startswith("cpu"):
            raise ValueError("float16 autocast is not supported for training on CPU; use bfloat16 or float32")
        return dtype
    kind = device.split(":")[0]
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_fast_bf16():
        if time_step is None:
            return torch.bfloat16
        return fastest([torch.float32, torch.bfloat16], time_step)[0]
    return torch.float32


def fastest(candidates: list[torch.dtype], time_step: Callable[[torch.dtype], float], rounds: int = 3,
            min_gain: float = 0.1) -> tuple[torch.dtype, dict[torch.dtype, float]]:
    """Time one step in each dtype, alternating A B A B for `rounds` rounds; the first round warms up and is
    dropped. The first candidate (the safe default) stays unless another's median step is more than `min_gain`
    (10 %) faster: a near tie is noise, not a reason to change precision. Returns (the winner, medians)."""
    times: dict[torch.dtype, list[float]] = {d: [] for d in candidates}
    for r in range(rounds):
        for d in candidates:
            t = time_step(d)
            if r > 0 or rounds == 1:
                times[d].append(t)
    medians = {d: sorted(ts)[len(ts) // 2] for d, ts in times.items()}
    best = min(candidates, key=lambda d: medians[d])
    if medians[best] < (1 - min_gain) * medians[candidates[0]]:
        return best, medians
    return candidates[0], medians


def autocast(device: str, dtype: torch.dtype):
    """Mixed-precision context: weights stay fp32, matrix products run in `dtype`."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)

