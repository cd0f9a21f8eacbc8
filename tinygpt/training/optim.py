"""The optimizers and their schedule: AdamW with decay on matrices only, or Muon for the blocks' matrices with AdamW
for the rest; warmup then cosine decay."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from tinygpt.config import TrainConfig


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


# Newton–Schulz iteration X <- aX + b(XXᵀ)X + c(XXᵀ)²X, which pushes every singular value of X towards 1.
NS_QUINTIC = (3.4445, -4.7750, 2.0315)  # Muon's: tuned for speed; singular values end up in about [0.7, 1.2]
NS_CUBIC = (1.5, -0.5, 0.0)             # the classical iteration: slow, but converges to the polar factor itself


def newton_schulz(g: torch.Tensor, steps: int = 5, coeffs: tuple[float, float, float] = NS_QUINTIC) -> torch.Tensor:
    """Approximately U Vᵀ for g = U S Vᵀ (the orthogonal polar factor), by matrix products only. g: (m, n).
    The reference is the SVD; with NS_CUBIC and enough steps the two agree to 1e-5 on well-conditioned matrices."""
    a, b, c = coeffs
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.t()
    x = x / (x.norm() + 1e-7)  # Frobenius norm >= spectral norm: every singular value starts <= 1
    for _ in range(steps):
        gram = x @ x.t()
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.t() if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (MomentUm Orthogonalized by Newton-Schulz) for groups marked use_muon, AdamW for the others.

    What it fixes: Adam updates a weight matrix entry by entry, so a few directions with large gradients dominate
    each step. Muon takes the momentum of the whole matrix and replaces it with its nearest orthogonal matrix (all
    singular values 1): every direction moves at the same rate, and speedrun projects reach a given loss with far
    fewer tokens. It suits the 2-D matrices inside the blocks; embeddings, the output head, gains and biases stay
    with AdamW (written out here too, so one object holds the whole state and resumes exactly)."""

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float], momentum: float = 0.95):
        super().__init__(groups, dict(lr=lr, betas=betas, momentum=momentum, weight_decay=0.0, use_muon=False,
                                      eps=1e-8))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                p.mul_(1 - lr * wd)  # decoupled weight decay
                if group["use_muon"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    update = p.grad.lerp(buf, group["momentum"])  # Nesterov
                    scale = max(1.0, p.size(0) / p.size(1)) ** 0.5  # same size of update for tall matrices
                    p.add_(newton_schulz(update), alpha=-lr * scale)
                else:
                    beta1, beta2 = group["betas"]
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    state["step"] += 1
                    state["exp_avg"].lerp_(p.grad, 1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    m_hat = state["exp_avg"] / (1 - beta1 ** state["step"])
                    v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
                    p.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-lr)
        return loss


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device: str) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices and embeddings only (not on biases and LayerNorm gains). With
    optimizer "muon": Muon for the 2-D matrices inside the blocks (transformer.h), AdamW for the rest; a group's
    "lr_scale" is its peak learning rate over learning_rate, so one schedule drives both."""
    if cfg.optimizer == "muon":
        named = {id(p): (n, p) for n, p in model.named_parameters() if p.requires_grad}.values()
        hidden = [p for n, p in named if p.dim() == 2 and n.startswith("transformer.h.")]
        rest = [p for n, p in named if not (p.dim() == 2 and n.startswith("transformer.h."))]
        groups = [{"params": hidden, "use_muon": True, "weight_decay": 0.0, "lr_scale": cfg.muon_lr / cfg.learning_rate},
                  {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
        return Muon(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), momentum=cfg.muon_momentum)
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kind = device.split(":")[0]
    # fused kernels exist for CUDA and CPU; one kernel for all parameters instead of many small ones
    fused = kind in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


__all__ = ["lr_at", "configure_optimizer", "Muon", "newton_schulz", "NS_QUINTIC", "NS_CUBIC"]
