"""How much memory training a model takes, and whether this machine has it: checked before a model is built,
so an impossible size is one clear line instead of an allocation traceback or the kernel's OOM killer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tinygpt.config import ModelConfig, SettingText, TrainConfig
from tinygpt.device import choose_dtype
from tinygpt.models import build_model, count_params
from tinygpt.models.ablations import switches
from tinygpt.models.attention_kernels import written_out_is_faster
from tinygpt.models.modern import swiglu_hidden

GB = 1e9
FP32 = 4   # bytes of what autocast leaves in fp32: the residual stream, the norms' statistics, the loss
MASK = 1   # bytes per element of a dropout mask (bool)
IDS = 16   # the input ids and the targets (int64) of one position


@dataclass
class MemoryEstimate:
    """Bytes needed to train: fp32 weights, their gradients, AdamW's two moments, and the activations of one
    micro-batch: what the forward pass keeps for the backward pass (autocast's low-precision copies of the
    weights included) and the largest working set the backward pass adds to it. Allocator slack comes on top.
    `attention`: the attention path counted (attention_path)."""
    params: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    attention: str = "fused"

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        return (f"about {self.total / GB:.1f} GB (weights {self.weights / GB:.1f} GB, gradients "
                f"{self.gradients / GB:.1f} GB, optimizer state {self.optimizer / GB:.1f} GB, activations "
                f"{self.activations / GB:.1f} GB)")


def count_parameters(cfg: ModelConfig) -> int:
    """Exact parameter count of the model `cfg` describes, without allocating it (built on the meta device)."""
    try:
        with torch.device("meta"):
            return count_params(build_model(cfg))
    except RuntimeError:  # a tensor too large to even describe
        raise MemoryError(f"a model with n_embd={cfg.n_embd}, n_layer={cfg.n_layer}, vocab_size={cfg.vocab_size} "
                          f"is too large for any machine (a weight matrix overflows 64-bit sizes)") from None


def training_dtypes(name: str, device: str) -> list[torch.dtype]:
    """The precisions a run with TrainConfig.dtype `name` may train in on `device`: the one named, or the one
    choose_dtype takes for `auto`, and fp32 beside it where `auto` times a step in each before choosing (a CPU
    with bf16 units), so both must fit. (Whether the named one is allowed there is choose_dtype's to say.)"""
    if name != "auto":
        return [getattr(torch, name)]
    chosen = choose_dtype(name, device)
    return [torch.float32, chosen] if device.split(":")[0] == "cpu" and chosen != torch.float32 else [chosen]


def attention_path(cfg: ModelConfig, device: str, dtype: torch.dtype) -> str:
    """How training attention runs on `device` in `dtype`: "written out" keeps every head's (T, T) weights for
    the backward pass, "fused" (the fused kernel) keeps none, and the bigram has no attention ("none"). The
    teaching rungs always write it out; the GPT asks attention_kernels.written_out_is_faster, and so does this,
    about a stand-in for the GPT's queries: no elements, but its T positions, on `device`, in `dtype`."""
    if cfg.model == "bigram":
        return "none"
    if cfg.model in ("single_head", "multi_head"):
        return "written out"
    q = torch.empty((0, cfg.n_head, cfg.block_size, 0), dtype=dtype, device=device)
    return "written out" if written_out_is_faster(q, cfg.dropout) else "fused"


def activation_bytes(cfg: ModelConfig, batch_size: int, dtype: torch.dtype, attention: str) -> int:
    """Bytes of one micro-batch's activations (MemoryEstimate.activations, less the weight copies): what the
    forward pass keeps for the backward pass, plus the largest working set of the backward pass. `dtype`: the
    precision the products run in (autocast's, or fp32); `attention`: its path (attention_path)."""
    a, C, T, V = dtype.itemsize, cfg.n_embd, cfg.block_size, cfg.vocab_size
    drop, written_out = cfg.dropout > 0, attention == "written out"
    loss = V * (a + FP32)  # the logits (alive as forward's output) and log-softmax's fp32 output
    working = 2 * V * FP32  # the backward pass starts with the loss's gradients over the vocabulary
    if cfg.model == "bigram":  # the table's rows are the logits, in fp32 under autocast too
        per_token = IDS + 2 * V * FP32
    elif cfg.model in ("single_head", "multi_head"):
        per_token = IDS + _rung_bytes(cfg, a) + loss
        # the heads' backward passes: a gradient of every head's weights, and one head's scores beside them
        working = max(working, (_rung_heads(cfg) + 1) * T * a)
    else:
        if written_out:  # one layer's gradients of its weights and scores; with dropout the masked weights go first
            working = max(working, cfg.n_head * T * a * (1 if drop else 2))
        on = switches(cfg.model)
        layer = _attention_bytes(cfg, a, written_out, on) + (_mlp_bytes(cfg, a, on) if on["mlp"] else 0)
        per_token = IDS + MASK * C * drop + cfg.n_layer * layer + _norm_bytes(cfg, a, on) + C * a + loss
    return batch_size * T * (per_token + working)


def _norm_bytes(cfg: ModelConfig, a: int, on: dict[str, bool]) -> int:
    """Per position: what a norm keeps. LayerNorm its input (the residual stream, fp32 unless the ablation
    drops the residual) and two statistics; RMSNorm its input, an fp32 copy of the normalised values and one
    statistic. (What the next matrix reads, the norm's output in the products' precision, is that matrix's.)"""
    if not on["layernorm"]:
        return 0
    stream = (FP32 if on["residual"] else a) * cfg.n_embd
    return stream + (2 * FP32 if cfg.norm == "layernorm" else FP32 * (cfg.n_embd + 1))


def _attention_bytes(cfg: ModelConfig, a: int, written_out: bool, on: dict[str, bool]) -> int:
    """Per position and layer: the attention half of a block. c_attn's input; q, k and v (the fused kernel
    keeps c_attn's product; written out keeps copies of the three); the heads' output, which c_proj reads;
    then the fused kernel's log-sum-exp per head, or the written-out weights (T per head; with dropout also the
    masked weights and the mask)."""
    C, nh, T, drop = cfg.n_embd, cfg.n_head, cfg.block_size, cfg.dropout > 0
    kept = _norm_bytes(cfg, a, on) + C * a + 3 * C * a + C * a + MASK * C * drop
    if written_out:
        kept += nh * T * a + nh * T * (a + MASK) * drop
    else:
        kept += nh * FP32
        if cfg.position == "rotary" and on["pos"]:  # turned q and k are new tensors, and the output comes out
            kept += 3 * C * a                        # in their layout, so the heads are copied side by side
    if cfg.qk_norm:  # RMSNorm on q and k, in fp32: its input or output and what attention reads, per head a scale
        kept += 2 * (2 * C * FP32 + nh * FP32)
    return kept


def _mlp_bytes(cfg: ModelConfig, a: int, on: dict[str, bool]) -> int:
    """Per position and layer: the MLP half of a block. Its input; GELU's (or squared ReLU's) input and output,
    4 x n_embd each; or SwiGLU's gate, its activation, the up projection and their product (under autocast each
    of SwiGLU's two first matrices casts the input for itself)."""
    C, drop = cfg.n_embd, cfg.dropout > 0
    kept = _norm_bytes(cfg, a, on) + MASK * C * drop
    if cfg.activation == "swiglu":
        return kept + C * a * (2 if a < FP32 else 1) + 4 * swiglu_hidden(C) * a
    return kept + C * a + 8 * C * a


def _rung_bytes(cfg: ModelConfig, a: int) -> int:
    """Per position: the teaching rungs (single_head, multi_head), one layer of Head modules with attention
    written out. The embedding each head's q, k, v matrices read (under autocast each casts its own copy);
    q, k, v; every head's weights (T each; with dropout also nn.Dropout's scaled mask and the dropped weights);
    the heads' output; multi_head's projection output (and its dropout mask)."""
    C, nh, T, drop = cfg.n_embd, _rung_heads(cfg), cfg.block_size, cfg.dropout > 0
    kept = (C * FP32 if a == FP32 else 3 * nh * C * a) + 3 * C * a + nh * T * a * (1 + 2 * drop) + C * a
    if cfg.model == "multi_head":
        kept += C * a * (1 + drop)
    return kept


def _rung_heads(cfg: ModelConfig) -> int:
    return cfg.n_head if cfg.model == "multi_head" else 1


def estimate_training_memory(model_cfg: ModelConfig, train_cfg: TrainConfig, shards: int = 1,
                             device: str = "cpu") -> MemoryEstimate:
    """Weights, gradients and AdamW state are 4 + 4 + 8 bytes per parameter, split over `shards` processes
    under FSDP. Activations: activation_bytes for the attention path the model takes on `device`, plus
    autocast's copies of the weights, in the precision that needs most of those the run may train in."""
    p = count_parameters(model_cfg)
    part = -(-p // max(1, shards))  # this process's share, rounded up
    candidates = []
    for dtype in training_dtypes(train_cfg.dtype, device):
        attention = attention_path(model_cfg, device, dtype)
        copies = dtype.itemsize * part if dtype.itemsize < FP32 else 0
        candidates.append((activation_bytes(model_cfg, train_cfg.batch_size, dtype, attention) + copies, attention))
    activations, attention = max(candidates)
    return MemoryEstimate(p, 4 * part, 4 * part, 8 * part, activations, attention)


def available_memory(device: str) -> int | None:
    """Bytes free for a new allocation on `device`, or None where it cannot be read (MPS, non-Linux CPUs)."""
    kind = device.split(":")[0]
    if kind == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if kind == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(model_cfg: ModelConfig, train_cfg: TrainConfig, device: str, shards: int = 1) -> MemoryEstimate:
    """Refuse (MemoryError with one line) a run whose estimate exceeds the memory available on `device`
    (`shards`: the processes FSDP splits weights, gradients and optimizer state over)."""
    est = estimate_training_memory(model_cfg, train_cfg, shards, device)
    free = available_memory(device)
    if free is not None and est.total > free:
        message = (f"this model ({est.params:,} parameters) needs {est.describe()} to train with batch "
                   f"{train_cfg.batch_size} x {model_cfg.block_size}, but only {free / GB:.1f} GB is available on "
                   f"{device}; make it smaller (n_layer, n_embd, block_size) or the batch smaller (batch_size, with "
                   f"gradient_accumulation_steps to keep the tokens per step)")
        if shards == 1 and device.startswith("cuda"):
            raise MemoryError(SettingText(f"{message}, or shard it over several GPUs (torchrun with `fsdp`)", "fsdp"))
        raise MemoryError(message)
    return est


__all__ = ["MemoryEstimate", "count_parameters", "training_dtypes", "attention_path", "activation_bytes",
           "estimate_training_memory", "available_memory", "check_fits"]
