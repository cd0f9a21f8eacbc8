"""What language models added to GPT-2's block after 2019, one small piece each: RMSNorm, rotary position
embeddings, squared ReLU and SwiGLU. Each is switched on by a ModelConfig option (the defaults stay GPT-2);
QK-norm is RMSNorm on queries and keys (attention.py), untied embeddings are gpt.py's head, Muon is optim.py's.

Rotary turns the two halves of a head's vector as pairs (i, i + head_size/2), the layout Hugging Face's Llama
uses, so Llama weights map onto ours without reordering rows.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.models.fast_dropout import Dropout

RMS_EPS = 1e-6  # Llama's rms_norm_eps


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * gain. What it fixes: LayerNorm also subtracts the mean and adds a bias, work
    that buys nothing measurable; RMSNorm keeps only the rescaling, which is what keeps the stream's size in check.
    Computed in fp32 whatever the input's precision, as Llama does."""

    def __init__(self, dim: int, eps: float = RMS_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotary_cos_sin(start: int, length: int, head_size: int, theta: float, device: torch.device | str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles of positions start .. start + length - 1, each (length, head_size / 2): pair i
    of position p turns by p * theta^(-2i / head_size) (fast pairs see neighbours, slow pairs see far)."""
    return rotary_cos_sin_at(torch.arange(start, start + length, device=device), head_size, theta)


def rotary_cos_sin_at(positions: torch.Tensor, head_size: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """rotary_cos_sin for positions given one by one (the batched engine's rows each sit at their own): cos and
    sin of shape positions.shape + (head_size / 2,), equal entry for entry to rotary_cos_sin's for the same
    positions (the same product, position times frequency, in float32)."""
    steps = torch.arange(0, head_size, 2, device=positions.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (steps / head_size))
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every pair (x[i], x[i + h]) of x (..., T, 2h) by its angle (cos, sin: (T, h)). What it fixes: a
    learned position table knows only the positions it was trained on and adds position into the content;
    rotating queries and keys instead makes q·k depend on the two tokens and their distance only."""
    h = x.size(-1) // 2
    x1, x2 = x[..., :h], x[..., h:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rotation_matrix(pos: int, head_size: int, theta: float) -> torch.Tensor:
    """The slow reference of apply_rotary for one position: the (head_size, head_size) matrix R, written out
    entry by entry, with apply_rotary(x) == R @ x. rotation_matrix(0, hs, θ) is the identity."""
    h = head_size // 2
    r = torch.zeros(head_size, head_size, dtype=torch.float64)
    for i in range(h):
        angle = torch.tensor(pos * theta ** (-2 * i / head_size), dtype=torch.float64)
        c, s = torch.cos(angle), torch.sin(angle)
        r[i, i], r[i, i + h] = c, -s
        r[i + h, i], r[i + h, i + h] = s, c
    return r


class ReluSquared(nn.Module):
    """relu(x)². What it fixes: GELU costs a transcendental per unit and gives every unit a little output;
    squared ReLU is cheap and sparse, and in speedrun measurements trains at least as fast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def swiglu_hidden(n_embd: int) -> int:
    """SwiGLU's hidden width: 8/3 · n_embd (its three matrices then hold as many numbers as the 4x MLP's two),
    rounded up to a multiple of 16. swiglu_hidden(128) == 352."""
    return 16 * -(-8 * n_embd // (3 * 16))


class SwiGLU(nn.Module):
    """c_proj(silu(c_gate(x)) * c_fc(x)): Llama's MLP (gate_proj, up_proj, down_proj). What it fixes: one
    fixed nonlinearity per unit; here a second projection decides, per token, how much of each unit passes
    (a gated linear unit), which reaches a lower loss for the same number of weights."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = swiglu_hidden(cfg.n_embd)
        self.c_gate = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x)))


__all__ = ["RMS_EPS", "RMSNorm", "rotary_cos_sin", "rotary_cos_sin_at", "apply_rotary", "rotation_matrix",
           "ReluSquared", "swiglu_hidden", "SwiGLU"]
