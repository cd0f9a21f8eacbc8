"""The optimizer and its schedule: AdamW with decay on matrices only, warmup then cosine decay."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, cosine decay to min_lr, then flat.
    With learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000: lr_at(0) = 1e-5 * (1/1.01)
    ... lr_at(100) = 1e-3, lr_at(2550) ~ 5.5e-4, lr_at(5000) = 1e-4."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    decay = cfg.decay_iters
    if step >= decay:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases and LayerNorm gains)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kind = device.split(":")[0]
    # fused kernels exist for CUDA and CPU; one kernel for all parameters instead of many small ones
    fused = kind in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


__all__ = ["lr_at", "configure_optimizer"]
