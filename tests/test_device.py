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


REAL_CPU_CHECK = device_mod.cpu_has_fast_bf16  # before conftest's fixture replaces it for each test

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
        assert REAL_CPU_CHECK() is expected


def test_autocast_is_a_no_op_in_fp32_and_casts_matmuls_in_bf16():
    a = torch.randn(4, 4)
    with autocast("cpu", torch.float32):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16


def test_fastest_alternates_drops_the_warm_up_and_needs_a_clear_gain():
    from tinygpt.device import fastest

    order = []
    steps = {torch.float32: iter([9.0, 1.0, 1.0, 1.0]), torch.bfloat16: iter([9.0, 0.5, 0.7, 0.6])}

    def time_step(dtype):
        order.append(dtype)
        return next(steps[dtype])

    best, medians = fastest([torch.float32, torch.bfloat16], time_step, rounds=4)
    assert order == [torch.float32, torch.bfloat16] * 4  # A B A B
    assert best is torch.bfloat16 and medians == {torch.float32: 1.0, torch.bfloat16: 0.6}  # warm-up dropped
    near = {torch.float32: 1.0, torch.bfloat16: 0.95}  # 5 % faster: noise, fp32 stays
    assert fastest([torch.float32, torch.bfloat16], near.get, rounds=2)[0] is torch.float32


def test_auto_on_a_bf16_cpu_takes_the_faster_precision_of_a_timed_step(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    slow_bf16 = {torch.float32: 1.0, torch.bfloat16: 1.5}  # small matrices: the casts cost more than they save
    assert choose_dtype("auto", "cpu", slow_bf16.get) is torch.float32
    fast_bf16 = {torch.float32: 1.0, torch.bfloat16: 0.4}
    assert choose_dtype("auto", "cpu", fast_bf16.get) is torch.bfloat16
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: False)
    assert choose_dtype("auto", "cpu", lambda d: pytest.fail("no bf16 units: nothing to time")) is torch.float32


def test_a_run_records_its_timed_precision_and_resume_keeps_it(monkeypatch, tmp_path):
    """The probe times real steps of a throwaway copy (the run's random state is untouched), the choice is
    stored in every checkpoint, and a resumed run keeps it even if a new probe would now choose otherwise."""
    import json

    import importlib

    train_mod = importlib.import_module("tinygpt.training.loop")  # the module (tinygpt.train is also the function)
    from tinygpt.config import build_configs
    from tinygpt.data.text import TextData
    from tinygpt.tokenizers import CharTokenizer

    text = "the cat sat on the mat. " * 100
    tok = CharTokenizer.train(text)
    model_cfg, cfg = build_configs(dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=2,
                                        eval_interval=2, eval_iters=1, device="cpu"), vocab_size=tok.vocab_size)
    data = TextData.from_text(text, tok, 16)
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    real_timer = train_mod._StepTimer
    seen = []

    def timer_preferring(winner):
        def make(*args):
            real = real_timer(*args)

            def time_step(dtype):
                seen.append(real(dtype))  # a real step of the throwaway model
                return 0.1 if dtype is winner else 1.0
            time_step.times, time_step.close = real.times, real.close
            return time_step
        return make

    monkeypatch.setattr(train_mod, "_StepTimer", timer_preferring(torch.bfloat16))
    first = {}

    class Record(train_mod.Hooks):
        def on_start(self, i):
            first.update(i)

    torch.manual_seed(5)
    before = torch.get_rng_state()
    train_mod._training_dtype(cfg, model_cfg, data, "cpu", None, False, train_mod.distributed.World())
    assert torch.equal(torch.get_rng_state(), before)  # the probe leaves the run's random state alone
    seen.clear()
    train_mod.train(model_cfg, cfg, data, tok, tmp_path / "run", hooks=Record())
    assert set(first["dtype_probe"]) == {"float32", "bfloat16"} and first["dtype"] == "bfloat16"
    assert len(seen) == 6 and all(s > 0 for s in seen)  # 3 rounds of fp32, bf16
    assert json.loads((tmp_path / "run/latest/config.json").read_text())["dtype"] == "bfloat16"
    monkeypatch.setattr(train_mod, "_StepTimer", timer_preferring(torch.float32))
    info = {}

    class Hooks(train_mod.Hooks):
        def on_start(self, i):
            info.update(i)

    cfg.max_iters = 4
    train_mod.train(model_cfg, cfg, data, tok, tmp_path / "run", resume=True, hooks=Hooks())
    assert info["dtype"] == "bfloat16" and info["dtype_probe"] == {}  # kept, not timed again


def test_the_dtype_probe_frees_its_model_before_training(monkeypatch):
    """The probe's throwaway model and AdamW state are gone when the precision is chosen, without waiting for
    the garbage collector: otherwise training holds two models (a 42 M-parameter run peaked 0.5 GB higher)."""
    import gc
    import importlib
    import weakref

    train_mod = importlib.import_module("tinygpt.training.loop")
    from tinygpt.config import build_configs
    from tinygpt.data.text import TextData
    from tinygpt.models import GPT
    from tinygpt.tokenizers import CharTokenizer

    text = "the cat sat on the mat. " * 100
    tok = CharTokenizer.train(text)
    model_cfg, cfg = build_configs(dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, device="cpu"),
                                   vocab_size=tok.vocab_size)
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    built = []
    monkeypatch.setattr(GPT, "__init__", lambda self, *a, _init=GPT.__init__, **k: (built.append(
        weakref.ref(self)), _init(self, *a, **k))[1])
    gc.disable()
    try:
        dtype, probe = train_mod._training_dtype(cfg, model_cfg, TextData.from_text(text, tok, 16), "cpu", None,
                                                 False, train_mod.distributed.World())
        assert set(probe) == {"float32", "bfloat16"} and len(built) == 1
        assert built[0]() is None
    finally:
        gc.enable()

