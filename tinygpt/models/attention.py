"""Causal multi-head self-attention and its KV cache, with the attention formula written out as the reference.

`CausalSelfAttention.forward(x) -> y` is GPT-2's attention, through PyTorch's fused kernel. Beside it, two
paths that the plain forward pass leaves out: `forward_cached` (generation: new tokens attend to the keys and
values of earlier ones, kept in a KVCache) and `forward_with_weights` (inspection: the weights as well, from
manual_attention). Which kernel runs on which hardware is attention_kernels.py's business.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.models.attention_kernels import written_out_attention, written_out_is_faster
from tinygpt.models.fast_dropout import Dropout
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C): each position takes in the values of the positions up to itself."""
        q, k, v = self.qkv(x)  # (B, nh, T, hs) each
        y = self.causal_attention(q, k, v)  # (B, nh, T, hs)
        return self.project(y)

    def qkv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of every head, (B, nh, T, hs) each, for x's tokens at positions start
        onwards (only rotary needs to know where they sit)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:
            cos, sin = rotary_cos_sin(start, T, C // self.n_head, self.rope_theta, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def causal_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(QKᵀ/√d + causal mask) V over q's own positions (manual_attention's output), with attention
        dropout in training, through PyTorch's fused kernel (or its written-out twin where that is faster)."""
        if self.training and written_out_is_faster(q, self.dropout):
            return written_out_attention(q, k, v, self.dropout)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """The heads' outputs (B, nh, T, hs) side by side, mixed by c_proj: (B, T, C)."""
        B, nh, T, hs = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)
        return self.resid_dropout(self.c_proj(y))

    # --- beside the plain path: generation through the KV cache, and the weights for inspection ----------
    def forward_cached(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """forward() for new tokens x (B, T, C) at positions cache.pos onwards: their keys and values join the
        cache (as layer `layer`'s), and each new token attends to every earlier one and to itself."""
        T = x.size(1)
        q, k, v = self.qkv(x, start=cache.pos)
        k, v = cache.append(layer, k, v)  # (B, nh, T_total, hs)
        p = self.dropout if self.training else 0.0
        if k.size(2) == T:  # no earlier positions: plain causal attention
            y = self.causal_attention(q, k, v)
        elif T == 1:  # one new token sees everything cached
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, k.size(2), x.device), dropout_p=p)
        return self.project(y)

    def forward_with_weights(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward's output, the attention weights (B, nh, T, T_total)), through manual_attention; with a
        cache, as forward_cached."""
        q, k, v = self.qkv(x, start=cache.pos if cache is not None else 0)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, T_total, hs)
        y, weights = manual_attention(q, k, v, self.attn_dropout)
        return self.project(y), weights
