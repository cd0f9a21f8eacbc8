"""Precision choice (device.py): explicit dtypes, float16 refused on CPU, and what 'auto' picks per device."""
from __future__ import annotations

import pytest
import torch

from tinygpt import device as device_mod
from tinygpt.device import autocast, choose_dtype


@pytest.mark.parametrize("name, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
@pytest.mark.parametrize("dev", ["cpu", "cuda", "cuda:1", "mps"])
def test_explicit_names_map_to_their_dtype_on_every_device(name, dtype, dev):
    assert choose_dtype(name, dev) is dtype


def test_float16_is_refused_on_cpu_only():
    for dev in ("cpu", "cpu:0"):
        with pytest.raises(ValueError, match="float16 autocast is not supported for training on CPU"):
            choose_dtype("float16", dev)
    assert choose_dtype("float16", "cuda") is torch.float16
    assert choose_dtype("float16", "mps") is torch.float16


@pytest.mark.parametrize("fast, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cpu_follows_native_bf16_support(monkeypatch, fast, expected):
    calls = []

    def fake() -> bool:
        calls.append(1)
        return fast

    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", fake)
    assert choose_dtype("auto", "cpu") is expected
    assert calls == [1]  # the answer came from the CPU check, not from a default
    assert choose_dtype("auto", "mps") is torch.float32  # MPS: fp32 whatever the CPU can do


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_prefers_bf16_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: not bf16)  # irrelevant on CUDA
    assert choose_dtype("auto", "cuda") is expected


def test_cpu_has_fast_bf16_reads_the_cpu_capability_checks(monkeypatch):
    for avx512, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert device_mod.cpu_has_fast_bf16() is expected


def test_autocast_is_a_no_op_in_fp32_and_casts_matmuls_in_bf16():
    a = torch.randn(4, 4)
    with autocast("cpu", torch.float32):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
