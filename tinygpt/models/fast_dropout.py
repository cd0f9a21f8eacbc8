"""Dropout with a cheaper random mask on CPU: nn.Dropout's results, four mask elements per random draw.

In training, each element is zeroed with probability p and the survivors are scaled by 1 / (1 - p), so the
expected value of every element is unchanged; in evaluation it is the identity. That is `nn.Dropout`, which
stays the reference (tests/test_dropout.py compares the two). What differs is how the mask is drawn on CPU:
PyTorch draws one Bernoulli sample per element from its generator, which makes the mask of the attention
weights (B × n_head × T × T elements per layer) one of the largest costs of a CPU training step. Here one
64-bit draw gives four 16-bit words, and an element is dropped where its word falls below round(p · 2¹⁶):
four elements per draw instead of one.
The drop probability is p rounded to a multiple of 2⁻¹⁶ (0.2 becomes 0.1999969), and the survivors are scaled
by the exact inverse of the rounded keep probability, so the expectation is still unchanged.
On other devices `F.dropout` is used as is: their generators are fast.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WORD = 1 << 16  # each element's random word has 16 bits


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """(a bool tensor of `shape`, True where an element survives; the scale survivors get), on CPU. Each
    element is dropped independently with probability round(p · 2¹⁶) / 2¹⁶."""
    cut, n = round(p * WORD), math.prod(shape)
    if cut >= WORD:
        return torch.zeros(shape, dtype=torch.bool), 0.0
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    words = words.view(torch.int16)[:n]  # uniform over [-2¹⁵, 2¹⁵): drop where below cut - 2¹⁵
    return (words >= cut - WORD // 2).view(shape), WORD / (WORD - cut)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with keep_mask's cheaper mask on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    keep, scale = keep_mask(x.shape, p)
    return torch.where(keep, x, 0.0).mul_(scale)


class Dropout(nn.Module):
    """nn.Dropout(p) with `dropout` inside: a drop-in replacement (no weights, so checkpoints do not change)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
