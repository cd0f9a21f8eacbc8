"""Causal multi-head self-attention: the manual reference path, the fused fast path, and the KV cache."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.models.dropout import Dropout, keep_mask
from tinygpt.models.modern import RMSNorm, apply_rotary, rotary_cos_sin


class KVCache:
    """Keys and values of every layer for the tokens seen so far, so each new token costs O(T), not O(T²).

    Preallocated to `max_len` positions: k[layer], v[layer] have shape (B, n_head, max_len, head_size).
    `pos` is how many positions are filled. The model advances it after all layers have run.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_size: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (batch_size, n_head, max_len, head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.pos = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T_new, hs) after the filled part; return all keys/values so far."""
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (in that order): beam search calls this when beams are reselected."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]


def causal_mask(t_q: int, t_k: int, device: torch.device | str) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where attention is allowed: query i (the last t_q of t_k positions)
    sees keys 0 .. t_k - t_q + i.  causal_mask(2, 3) = [[1, 1, 0], [1, 1, 1]]."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     dropout: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QKᵀ/√d + causal mask) V, written out. q: (B, nh, Tq, hs), k, v: (B, nh, Tk, hs).
    Returns the output (B, nh, Tq, hs) and the attention weights (B, nh, Tq, Tk)."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, Tq, Tk)
    mask = causal_mask(q.size(-2), k.size(-2), q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
    out = (dropout(weights) if dropout is not None else weights) @ v
    return out, weights


def written_out_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """manual_attention's output for plain causal attention (Tq == Tk) in training, with fewer passes over the
    (B, nh, T, T) weights, for CPU (keep_mask draws on CPU). The causal mask is an additive -inf bias that the
    product QKᵀ is accumulated onto, scaled by 1/√d in the same call (baddbmm), so neither the mask nor the scale
    costs a pass of its own, and the backward pass needs no masking (softmax's gradient is already zero where
    its output is). Softmax takes q's dtype as is: PyTorch accumulates bf16 in fp32 inside the kernel, so there
    is no fp32 copy of the scores to make and to differentiate. Dropout's 1 / (1 - p) goes onto the output. In
    bf16 on our 2-core CPU this is 1.3-1.5x as fast as manual_attention, forward and backward (docs/LOG.md)."""
    B, nh, T, hs = q.shape
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)  # -inf above the diagonal
    scores = torch.baddbmm(mask, q.reshape(B * nh, T, hs), k.reshape(B * nh, T, hs).transpose(1, 2),
                           alpha=1.0 / math.sqrt(hs))  # (B·nh, T, T)
    weights = F.softmax(scores, dim=-1)
    if dropout_p == 0.0:
        return torch.bmm(weights, v.reshape(B * nh, T, hs)).view(B, nh, T, hs)
    keep, scale = keep_mask(weights.shape, dropout_p)
    return torch.bmm(torch.where(keep, weights, 0.0), v.reshape(B * nh, T, hs)).view(B, nh, T, hs).mul_(scale)


def written_out_is_faster(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether training-time causal attention over q's positions runs faster written out (written_out_attention)
    than through PyTorch's fused kernel (F.scaled_dot_product_attention). Only ever on CPU, where it was
    measured (docs/LOG.md, forward and backward together):
    - with dropout, the fused call falls back to the same written-out computation on CPU, but draws its mask
      with one Bernoulli sample per weight; models/dropout.py draws it in a sixth of the time;
    - in bf16, the fused kernel's backward was 1.3-2.4x slower than the written-out path from 64 to 256
      positions, and 1.3x faster at 1024, where the written-out weights (T x T per head) also cost the most
      memory; fp32 stays fused (it was 1.4x faster than manual_attention)."""
    if q.device.type != "cpu":
        return False
    # under autocast the products run in its dtype, whatever q's (QK-norm, for one, hands q over in fp32)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    return dropout_p > 0.0 or (dtype != torch.float32 and q.size(-2) <= 512)


def cached_attention_kernels(device: torch.device):
    """A context for attention through the KV cache: on CUDA, the fused kernels enabled now, less cuDNN's.
    cuDNN's kernel plans for one exact shape, and the number of keys grows by one with every new token, so it
    plans again at every step: about 2.8 ms of host time per call. On an H200 that made greedy decoding of a
    GPT-2-small-shaped model 16x slower at batch 1 (21 against 336 tokens/s) and 15x slower at batch 16
    (docs/LOG.md). Elsewhere, or when cuDNN's is the only kernel enabled, PyTorch's choice stands. GPT.forward
    enters it once per cached forward pass (about 15 us), not once per layer."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b = torch.backends.cuda
    kept = [k for k, on in ((SDPBackend.FLASH_ATTENTION, b.flash_sdp_enabled()),
                            (SDPBackend.EFFICIENT_ATTENTION, b.mem_efficient_sdp_enabled()),
                            (SDPBackend.MATH, b.math_sdp_enabled())) if on]
    return sdpa_kernel(kept) if kept else contextlib.nullcontext()


class CausalSelfAttention(nn.Module):
    """All heads at once: one matrix c_attn makes q, k, v for every head; c_proj mixes the heads' outputs.

    Options after GPT-2: `rotary` turns q and k by their positions (models/modern.py; cached tokens sit at
    positions cache.pos onwards). `cfg.qk_norm` RMS-normalises each head's q and k first (q_norm, k_norm, one
    gain per head dimension, as Qwen3): what it fixes is attention logits that grow without bound as the
    weights grow, which saturates the softmax and destabilises training at high learning rates.
    """

    def __init__(self, cfg: ModelConfig, rotary: bool = False):
        super().__init__()
        self.n_head = cfg.n_head
        self.rotary = rotary
        self.rope_theta = cfg.rope_theta
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_size)
            self.k_norm = RMSNorm(cfg.head_size)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = Dropout(cfg.dropout)
        self.resid_dropout = Dropout(cfg.dropout)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                manual: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, C). Returns (y, weights); weights (B, nh, T, T_total) only on the manual path."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:  # the new tokens' positions: after the cached ones
            cos, sin = rotary_cos_sin(cache.pos if cache is not None else 0, T, C // self.n_head, self.rope_theta,
                                      x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, T_total, hs)
        weights = None
        if manual:
            y, weights = manual_attention(q, k, v, self.attn_dropout)
        elif self.training and k.size(2) == T and written_out_is_faster(q, self.dropout):
            y = written_out_attention(q, k, v, self.dropout)
        else:
            p = self.dropout if self.training else 0.0
            if k.size(2) == T:  # no earlier positions: plain causal attention
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            elif T == 1:  # one new token sees everything cached
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, k.size(2), x.device), dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y)), weights
