"""Which attention kernel runs where: the one place attention branches on hardware.

attention.py computes causal attention with PyTorch's fused kernel (F.scaled_dot_product_attention) and keeps
manual_attention, the formula written out, as the reference. Two exceptions, both about speed, never results:
- training on CPU: `written_out_attention`, the same formula in fewer passes over the weights, where
  `written_out_is_faster` says it beats the fused kernel (tests check it against manual_attention);
- decoding through the KV cache on CUDA: `cached_attention_kernels`, the fused kernels less cuDNN's.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tinygpt.models.fast_dropout import keep_mask


def written_out_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """manual_attention's output for plain causal attention (Tq == Tk) in training, with fewer passes over the
    (B, nh, T, T) weights, for CPU (keep_mask draws on CPU). The causal mask is an additive -inf bias that the
    product QKᵀ is accumulated onto, scaled by 1/√d in the same call (baddbmm), so neither the mask nor the scale
    costs a pass of its own, and the backward pass needs no masking (softmax's gradient is already zero where
    its output is). Softmax takes q's dtype as is: PyTorch accumulates bf16 in fp32 inside the kernel, so there
    is no fp32 copy of the scores to make and to differentiate. Dropout's 1 / (1 - p) goes onto the output."""
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
    than through PyTorch's fused kernel. Only ever on CPU, where it was measured, forward and backward together
    (bench/step_profile.py shows a step's costs):
    - with dropout: the fused call falls back to the same written-out computation on CPU, but draws its mask
      with one Bernoulli sample per weight, where keep_mask draws four per sample;
    - in bf16 up to 512 positions: the fused kernel's backward pass was the slower one there, and beyond, where
      the written-out weights (T x T per head) also cost the most memory, it was the faster one;
    - fp32 without dropout stays fused: it was faster than writing attention out."""
    if q.device.type != "cpu":
        return False
    # under autocast the products run in its dtype, whatever q's (QK-norm, for one, hands q over in fp32)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    return dropout_p > 0.0 or (dtype != torch.float32 and q.size(-2) <= 512)


def cached_attention_kernels(device: torch.device):
    """A context for attention through the KV cache: on CUDA, the fused kernels enabled now, less cuDNN's.
    cuDNN's kernel plans for one exact shape, and the number of keys grows by one with every new token, so it
    would plan again at every step of decoding, which costs more host time than the step itself. Elsewhere, or
    when cuDNN's is the only kernel enabled, PyTorch's choice stands. GPT enters it once per cached forward
    pass, not once per layer."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    b = torch.backends.cuda
    kept = [k for k, on in ((SDPBackend.FLASH_ATTENTION, b.flash_sdp_enabled()),
                            (SDPBackend.EFFICIENT_ATTENTION, b.mem_efficient_sdp_enabled()),
                            (SDPBackend.MATH, b.math_sdp_enabled())) if on]
    return sdpa_kernel(kept) if kept else contextlib.nullcontext()
