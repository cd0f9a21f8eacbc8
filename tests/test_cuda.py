"""The fast paths on a CUDA GPU agree with the slow ones: KV cache, bf16 autocast, SDPA; bench/gpu.py runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (these tests check the GPU paths)", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402

from tinygpt.config import ModelConfig  # noqa: E402
from tinygpt.generation.generate import generate  # noqa: E402
from tinygpt.models import GPT  # noqa: E402
from tinygpt.models.attention import causal_mask, manual_attention  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_gpt(vocab: int = 64, block: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=4, n_embd=64)).cuda()


def test_cached_and_uncached_greedy_are_identical_on_cuda():
    m = tiny_gpt().eval()
    with torch.no_grad():  # sharpen the random model so greedy choices are not near-ties
        m.transformer.wte.weight.mul_(20)
    g = torch.Generator(device="cuda").manual_seed(0)
    prompt = torch.randint(0, 64, (2, 5), device="cuda", generator=g)
    for row in prompt:  # 60 new tokens: past block_size, so the window slides and the cache is rebuilt
        a = generate(m, row, 60, temperature=0, use_cache=True)
        b = generate(m, row, 60, temperature=0, use_cache=False)
        assert a == b and len(a) == 60


def _sdpa_kernels(run) -> set[str]:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return {e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product_")}


def test_generation_through_the_cache_never_runs_cudnn_attention():
    """bf16, head size 64: where SDPA picks cuDNN on its own (the control); the cached path must not (models/
    attention.py says why). (Cached against uncached tokens: test_cached_and_uncached_greedy_are_identical_on_cuda.)"""
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=128)).cuda().to(torch.bfloat16).eval()
    q = torch.randn(1, 2, 1, 64, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, 2, 9, 64, device="cuda", dtype=torch.bfloat16)
    if not any("cudnn" in n for n in _sdpa_kernels(lambda: F.scaled_dot_product_attention(q, kv, kv))):
        pytest.skip("SDPA does not pick cuDNN attention at this shape on this GPU: nothing to leave out")
    prompt = torch.randint(0, 64, (5,), device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
    out = []
    names = _sdpa_kernels(lambda: out.append(generate(m, prompt, 8, temperature=0, use_cache=True)))
    assert len(out[0]) == 8 and names and not any("cudnn" in n for n in names), names


def test_bf16_autocast_step_matches_fp32():
    m = tiny_gpt()
    g = torch.Generator(device="cuda").manual_seed(1)
    data = torch.randint(0, 64, (8, 33), device="cuda", generator=g)
    x, y = data[:, :-1], data[:, 1:]
    _, loss32 = m(x, y)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss16 = m(x, y)
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(loss16) and abs(loss16.item() - loss32.item()) < 2e-2 * loss32.item()
    loss16.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("t_q,t_k", [(48, 48), (5, 48)])  # whole sequence; new tokens after a cache
def test_manual_attention_matches_sdpa_on_cuda(dtype, tol, t_q, t_k):
    g = torch.Generator(device="cuda").manual_seed(t_q)
    q = torch.randn(2, 4, t_q, 32, device="cuda", generator=g).to(dtype)
    k, v = (torch.randn(2, 4, t_k, 32, device="cuda", generator=g).to(dtype) for _ in range(2))
    ours, weights = manual_attention(q, k, v)
    if t_q == t_k:
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t_q, t_k, "cuda"))
    assert torch.allclose(ours.float(), ref.float(), atol=tol, rtol=tol)
    assert torch.allclose(weights.float().sum(-1), torch.ones(2, 4, t_q, device="cuda"), atol=tol)


def test_gpu_bench_smoke_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--device", "cuda"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["tokens_per_s"] > 0 and result["peak_mem_gib"] > 0 and result["gen_tokens_per_s"]
