"""How much memory training a model takes, and whether this machine has it: checked before a model is built,
so an impossible size is one clear line instead of an allocation traceback or the kernel's OOM killer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tinygpt.config import ModelConfig, TrainConfig

GB = 1e9


@dataclass
class MemoryEstimate:
    """Bytes needed to train: fp32 weights, their gradients, AdamW's two moments, and the activations kept
    for the backward pass of one micro-batch (a lower bound: allocator slack and temporaries come on top)."""
    params: int
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        return (f"about {self.total / GB:.1f} GB (weights {self.weights / GB:.1f} GB, gradients "
                f"{self.gradients / GB:.1f} GB, optimizer state {self.optimizer / GB:.1f} GB, activations "
                f"{self.activations / GB:.1f} GB)")


def count_parameters(cfg: ModelConfig) -> int:
    """Exact parameter count of the model `cfg` describes, without allocating it (built on the meta device)."""
    from tinygpt.models import build_model, count_params

    try:
        with torch.device("meta"):
            return count_params(build_model(cfg))
    except RuntimeError:  # a tensor too large to even describe
        raise MemoryError(f"a model with n_embd={cfg.n_embd}, n_layer={cfg.n_layer}, vocab_size={cfg.vocab_size} "
                          f"is too large for any machine (a weight matrix overflows 64-bit sizes)") from None


def estimate_training_memory(model_cfg: ModelConfig, train_cfg: TrainConfig, shards: int = 1) -> MemoryEstimate:
    """Weights, gradients and AdamW state are 4 + 4 + 8 bytes per parameter, split over `shards` processes
    under FSDP. Activations: per token and layer about 16 * n_embd floats (LayerNorm outputs, q/k/v, attention
    output, the MLP's 4x-wide hidden layer before and after GELU; fused attention keeps no T x T matrix), plus
    the logits, their fp32 copy and their gradient (3 * vocab floats per token)."""
    p = count_parameters(model_cfg)
    tokens = train_cfg.batch_size * model_cfg.block_size
    per_token = model_cfg.n_layer * 16 * model_cfg.n_embd + 3 * model_cfg.vocab_size
    part = -(-p // max(1, shards))  # this process's share, rounded up
    return MemoryEstimate(p, 4 * part, 4 * part, 8 * part, 4 * tokens * per_token)


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
    est = estimate_training_memory(model_cfg, train_cfg, shards)
    free = available_memory(device)
    if free is not None and est.total > free:
        raise MemoryError(f"this model ({est.params:,} parameters) needs {est.describe()} to train with batch "
                          f"{train_cfg.batch_size} x {model_cfg.block_size}, but only {free / GB:.1f} GB is "
                          f"available on {device}; make it smaller (n_layer, n_embd, block_size) or the batch "
                          f"smaller (batch_size, with gradient_accumulation_steps to keep the tokens per step)"
                          + (", or shard it over several GPUs (torchrun with --fsdp)"
                             if shards == 1 and device.startswith("cuda") else ""))
    return est


__all__ = ["MemoryEstimate", "count_parameters", "estimate_training_memory", "available_memory", "check_fits"]
