"""Causal multi-head self-attention and its KV cache, with the attention formula written out as the reference.

`CausalSelfAttention.forward(x) -> y` is GPT-2's attention, through PyTorch's fused kernel. Beside it, two
paths that the plain forward pass leaves out: `forward_cached` (generation: new tokens attend to the keys and
values of earlier ones, kept in a KVCache, or in a RowKVCache for the batched engine) and `forward_with_weights`
(inspection: the weights as well, from manual_attention). Which kernel runs on which hardware is
attention_kernels.py's business.

Two caches. `KVCache`: every row at the same position `pos` (rows of one length, the Decoder's). `RowKVCache`:
the batched engine's (generation/engine.py), one slot per row, every row at its own position, so rows of
different lengths decode in one pass. Its shape never changes (preallocated to the window, written in place,
which is what lets torch.compile capture the step). A worked example, block_size 4, so 4 positions + 1 spare:

    slot 0: a row of 3 tokens "abc" feeds "c" at position 2    keys a b c . .   mask 1 1 1 0 0
    slot 1: a row of 1 token  "x"   feeds "x" at position 0    keys x . . . .   mask 1 0 0 0 0
    slot 2: free (or a row that sits this step out)            writes to the spare position 4, output unused

Each row's new key and value are written at its position (`write_at`), and its query sees the keys up to and
including that position. A row that takes no part in a step writes to the spare position, which no real row's
mask ever lets through, so a step's shapes need not depend on who takes part (the compiled step reads every
slot and every position; the eager one only as many as are in use).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.models.attention_kernels import written_out_attention, written_out_is_faster
from tinygpt.models.fast_dropout import Dropout
from tinygpt.models.modern import RMSNorm, apply_rotary, rotary_cos_sin, rotary_cos_sin_at


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


class RowKVCache:
    """The batched engine's static cache: a slot per row, each row at its own position (module docstring).

    k[layer], v[layer]: (slots, n_head, max_len + 1, head_size), allocated once and written in place; position
    max_len is the spare one that rows sitting a step out write to. Before each decoding pass the engine calls
    `point(write_at)` with every slot's position for its new token (max_len for a slot that sits out); the
    model then reads `positions` (where each new token sits, for position embeddings and rotary) and `mask`.
    """

    def __init__(self, n_layer: int, slots: int, n_head: int, max_len: int, head_size: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (slots, n_head, max_len + 1, head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.point(torch.full((slots,), max_len, dtype=torch.long, device=device))

    @property
    def slots(self) -> int:
        return self.k[0].size(0)

    def point(self, write_at: torch.Tensor, keys: int | None = None) -> None:
        """Set where each slot's next token goes (slots,): its position, or max_len to sit the step out.
        keys: read only the first `keys` positions (more than any position written this step; the eager engine
        skips the empty end of the window), or all max_len + 1 (one shape for every step: compiled)."""
        self.write_at = write_at
        self.keys = self.max_len + 1 if keys is None else keys
        self.positions = write_at.clamp(max=self.max_len - 1)  # a slot that sits out reads position max_len - 1
        key_pos = torch.arange(self.keys, device=write_at.device)
        self.mask = (key_pos[None, :] <= write_at[:, None])[:, None, None, :]  # (slots, 1, 1, keys)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write each slot's new k, v (slots, nh, 1, hs) at its position; return every slot's keys and values
        (slots, nh, keys, hs)."""
        index = self.write_at.view(-1, 1, 1, 1).expand_as(k)
        self.k[layer].scatter_(2, index, k)
        self.v[layer].scatter_(2, index, v)
        return self.k[layer][:, :, :self.keys], self.v[layer][:, :, :self.keys]

    def first(self, n: int) -> RowKVCache:
        """The same cache seen through its first n slots (views: writes land in this cache)."""
        view = RowKVCache.__new__(RowKVCache)
        view.k, view.v, view.max_len = [k[:n] for k in self.k], [v[:n] for v in self.v], self.max_len
        view.point(self.write_at[:n])
        return view

    def store(self, slots: torch.Tensor, cache: KVCache) -> None:
        """Copy a prefilled KVCache's rows (their first cache.pos positions) into `slots` (one per row)."""
        for mine, theirs in ((self.k, cache.k), (self.v, cache.v)):
            for layer, t in enumerate(theirs):
                mine[layer][slots, :, :cache.pos] = t[:, :, :cache.pos]

    def copy_slot(self, src: int, dst: int) -> None:
        """Give slot dst slot src's keys and values (a beam that forks)."""
        for t in self.k + self.v:
            t[dst] = t[src]

    def grown(self, slots: int) -> RowKVCache:
        """A cache with more slots, the current ones copied in."""
        k0 = self.k[0]
        bigger = RowKVCache(len(self.k), slots, k0.size(1), self.max_len, k0.size(3), k0.device, k0.dtype)
        for mine, theirs in ((bigger.k, self.k), (bigger.v, self.v)):
            for layer, t in enumerate(theirs):
                mine[layer][:t.size(0)] = t
        return bigger


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

    def qkv(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of every head, (B, nh, T, hs) each, for x's tokens at positions start
        onwards, or, for the batched engine's one token per row, at `positions` (B,) (only rotary needs to know
        where they sit)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:
            if positions is None:
                cos, sin = rotary_cos_sin(start, T, C // self.n_head, self.rope_theta, x.device)  # (T, hs/2)
            else:
                cos, sin = rotary_cos_sin_at(positions, C // self.n_head, self.rope_theta)  # (B, hs/2)
                cos, sin = cos[:, None, None, :], sin[:, None, None, :]  # (B, 1, 1, hs/2): one angle per row
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
    def forward_cached(self, x: torch.Tensor, cache: KVCache | RowKVCache, layer: int) -> torch.Tensor:
        """forward() for new tokens x (B, T, C) at positions cache.pos onwards: their keys and values join the
        cache (as layer `layer`'s), and each new token attends to every earlier one and to itself. With a
        RowKVCache, one token per row (T == 1), each at its own position (forward_rows)."""
        if isinstance(cache, RowKVCache):
            return self.forward_rows(x, cache, layer)
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

    def forward_rows(self, x: torch.Tensor, cache: RowKVCache, layer: int) -> torch.Tensor:
        """One new token per row x (S, 1, C), row i's at position cache.positions[i]: its key and value are
        written into the row's slot, and it attends to its own row's keys up to itself (cache.mask)."""
        q, k, v = self.qkv(x, positions=cache.positions)  # (S, nh, 1, hs)
        k, v = cache.append(layer, k, v)  # (S, nh, cache.keys, hs): every slot's keys; the mask picks each row's
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.mask)
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
