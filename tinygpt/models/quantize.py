"""Lower-precision weights for inference: weight-only int8 (per output channel) and bf16, as a module swap that
leaves the model files untouched.

    model = quantize(model, "int8")   # a converted copy; the fp32 model is left as it was
    model = quantize(model, "bf16")   # every weight (and so every activation) in bfloat16

int8: every nn.Linear becomes an `Int8Linear`: each output row w of the weight is stored as round(w / s) in
int8, s = max|w| / 127 (one fp32 scale per output channel), so no weight moves by more than s / 2. Everything
else (embeddings, norms, biases, activations) stays in the model's precision. Decoding one token reads every
weight once, so int8 weights are a quarter of fp32's memory traffic.

The output head of a model with tied embeddings (GPT-2's lm_head shares wte's matrix) is quantized too: it is
the largest matrix read per token (38.6M of GPT-2's 124M weights). The input embedding keeps its float table,
because a lookup reads one row per token and costs no bandwidth worth saving; the head then gets its own int8
copy of the matrix (a tied GPT-2 in int8 holds 0.15 GB of float table and 0.12 GB of int8 weights, against
0.50 GB in fp32).

Which kernel multiplies by int8 weights is decided here, once (`int8_kernel_runs`): PyTorch's
`torch._weight_int8pack_mm` on CPU, fed bf16 activations (its vectorised paths, AVX2, AVX512 and NEON, are
the bf16 ones; fp32 activations take a scalar loop, several times slower than the fp32 product). It rounds
the input, the scales and the output to bf16 (each a relative 2^-9 at most) and accumulates in fp32. Elsewhere
(CUDA, whose PyTorch builds have no such kernel; MPS, whose kernel is untested here) and where the kernel's
layout rules are not met (in_features a multiple of 16), `int8_matmul_reference` runs: dequantize, then an
ordinary product, exact up to fp32 rounding. Tests check the two agree within the bound the rounding gives.

A quantized model is for inference only: asking one to train (model.train() then a forward pass) raises
QuantizedError. Train the fp32 model, then quantize it.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn as nn

Mode = Literal["int8", "bf16"]
QUANTIZE_MODES: tuple[str, ...] = ("int8", "bf16")
KERNEL_ALIGN = 16  # the CPU kernel reads 16 int8 weights (AVX512) or 8 (AVX2, NEON) at a time, rows unpadded


class QuantizedError(ValueError):
    """A quantized model was asked to train, or quantize() was given a mode it does not know; one line."""


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scales fp32 (out,)) with weight ≈ q * scales[:, None]: each row's absmax maps to 127.
    A row of zeros gets scale 1 (and q = 0). quantize_int8(torch.tensor([[0.5, -1.0]])) == ([[64, -127]],
    [1/127])."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def int8_matmul_reference(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ (q * scales[:, None]).T in x's dtype: the slow obvious path (the weight dequantized, then
    an ordinary product). Returns (..., out)."""
    return x @ (q.to(x.dtype) * scales[:, None].to(x.dtype)).T


def int8_kernel_runs(x: torch.Tensor, q: torch.Tensor) -> bool:
    """Whether int8_matmul uses PyTorch's int8 kernel for this input: on CPU, where this build has one, for
    weights whose rows are a whole number of the kernel's vectors (in_features % 16 == 0)."""
    return (x.device.type == "cpu" and q.size(1) % KERNEL_ALIGN == 0 and _has_kernel("CPU"))


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scales_bf16: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8_matmul_reference's product, through PyTorch's int8 kernel where int8_kernel_runs says so (its
    result then carries the bf16 roundings described in the module docstring). x (..., in) -> (..., out) in
    x's dtype. `scales_bf16` is scales in bf16, kept beside them so no step converts them again."""
    if not int8_kernel_runs(x, q):
        return int8_matmul_reference(x, q, scales)
    shape = x.shape
    a = x.reshape(-1, shape[-1])
    # a fresh bf16 tensor: contiguous and aligned, as the kernel's aligned vector loads require (a bf16 input
    # may be a view that starts mid-vector, so it is copied when it does)
    a = a.to(torch.bfloat16) if a.dtype != torch.bfloat16 else _aligned(a)
    y = torch._weight_int8pack_mm(a, q, scales_bf16)  # (rows, out) in bf16, accumulated in fp32
    return y.to(x.dtype).view(*shape[:-1], q.size(0))


def _aligned(a: torch.Tensor) -> torch.Tensor:
    return a if a.is_contiguous() and a.data_ptr() % 64 == 0 else a.clone(memory_format=torch.contiguous_format)


_KERNELS: dict[str, bool] = {}


def _has_kernel(dispatch_key: str) -> bool:
    """Whether this PyTorch build has an int8 weight kernel for the dispatch key ("CPU", "CUDA", "MPS")."""
    if dispatch_key not in _KERNELS:
        _KERNELS[dispatch_key] = (hasattr(torch, "_weight_int8pack_mm") and
                                  torch._C._dispatch_has_kernel_for_dispatch_key("aten::_weight_int8pack_mm",
                                                                                 dispatch_key))
    return _KERNELS[dispatch_key]


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights and one scale per output channel: y = x @ (weight * scales[:, None]).T + bias.

    Buffers (so state_dict holds them, and .to(device) moves them): weight int8 (out, in), scales fp32 (out,),
    scales_bf16 (out,), bias (out,) or None, in the original layer's dtype. There are no parameters: nothing here
    trains. `reference=True` always takes the dequantize-then-multiply path (tests compare the two)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.reference = False
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("scales_bf16", torch.ones(out_features, dtype=torch.bfloat16, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        """The int8 twin of `linear` (its weight quantized per output row; the bias kept as it is)."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, w.dtype, w.device)
        q, scales = quantize_int8(w)
        layer.weight.copy_(q)
        layer.scales.copy_(scales)
        layer.scales_bf16.copy_(scales.to(torch.bfloat16))
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    def dequantized(self) -> torch.Tensor:
        """The weight as the products see it: weight * scales[:, None], fp32 (out, in)."""
        return self.weight.float() * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference:
            y = int8_matmul_reference(x, self.weight, self.scales)
        else:
            y = int8_matmul(x, self.weight, self.scales_bf16, self.scales)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize(model: nn.Module, mode: Mode | str | None, *, inplace: bool = False) -> nn.Module:
    """The model with lower-precision weights for inference, in eval mode: "int8" (every nn.Linear an
    Int8Linear), "bf16" (every floating-point weight in bfloat16), or None (the model as it is).

    By default a converted copy is returned and `model` is left exactly as it was; `inplace=True` converts
    `model` itself (no second copy of the weights in memory) and returns it. The result refuses to train."""
    if mode is None:
        return model
    if mode not in QUANTIZE_MODES:
        raise QuantizedError(f"unknown quantization {mode!r} (choose from {', '.join(QUANTIZE_MODES)})")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if mode == "bf16":
        model.to(torch.bfloat16)
    else:
        _swap_linears(model)
    for p in model.parameters():
        p.requires_grad_(False)
    model.quantized = mode
    if not getattr(model, "_refuses_training", False):
        model.register_forward_pre_hook(_refuse_training)
        model._refuses_training = True
    return model


def quantized_mode(model: nn.Module) -> str | None:
    """How quantize() converted the model ("int8", "bf16"), or None for a model it never touched."""
    return getattr(model, "quantized", None)


def _swap_linears(module: nn.Module, done: dict[int, Int8Linear] | None = None) -> None:
    """Replace every nn.Linear below `module` by its Int8Linear, in place. A layer that appears in several
    places is quantized once, and its int8 twin appears in the same places."""
    done = {} if done is None else done
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            key = id(child)
            if key not in done:
                done[key] = Int8Linear.from_linear(child)
            setattr(module, name, done[key])
        else:
            _swap_linears(child, done)


def _refuse_training(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a quantized model: a forward pass in training mode is refused."""
    if module.training:
        raise QuantizedError(f"this model was quantized ({quantized_mode(module)}) for inference and cannot be "
                             f"trained; train the full-precision model and quantize it afterwards")


__all__ = ["QUANTIZE_MODES", "QuantizedError", "quantize_int8", "int8_matmul_reference", "int8_kernel_runs",
           "int8_matmul", "Int8Linear", "quantize", "quantized_mode"]
