"""The GPT model: token + position embeddings -> pre-LayerNorm transformer blocks -> LayerNorm -> tied head.

Submodule names follow GPT-2 (wte, wpe, h, ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj,
ln_f) so weights map one-to-one to Hugging Face's GPT2LMHeadModel. The defaults are GPT-2; ModelConfig's
later options (position, norm, activation, qk_norm, bias, tie_embeddings; models/modern.py) swap pieces in place.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from tinygpt.config import ModelConfig
from tinygpt.models.attention import CausalSelfAttention, KVCache, cached_attention_kernels
from tinygpt.models.base import LanguageModel
from tinygpt.models.dropout import Dropout
from tinygpt.models.loss import next_token_loss
from tinygpt.models.modern import ReluSquared, RMSNorm, SwiGLU

# The full GPT and its ablations for the ladder: "what breaks if you remove it". Each name switches off
# one piece; everything else (sizes, training) stays the same.
VARIANTS: dict[str, dict[str, bool]] = {
    "gpt": {},
    "gpt_no_pos": {"pos": False},            # no position embedding: attention sees a bag of tokens
    "gpt_no_residual": {"residual": False},  # blocks replace the stream instead of adding to it
    "gpt_no_layernorm": {"layernorm": False},
    "gpt_no_mlp": {"mlp": False},            # attention only: no per-position computation
}


def _features(model: str) -> dict[str, bool]:
    return {"pos": True, "residual": True, "layernorm": True, "mlp": True, **VARIANTS[model]}


class MLP(nn.Module):
    """Position-wise feed-forward: expand 4x, GELU, project back. GPT-2 used GELU's tanh approximation
    (activation "gelu_tanh"), so its weights give its logits only with that one. Activation "relu2" puts
    squared ReLU in GELU's place."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = ReluSquared() if cfg.activation == "relu2" else \
            nn.GELU(approximate="tanh" if cfg.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


def _norm(cfg: ModelConfig, on: bool) -> nn.Module:
    if not on:
        return nn.Identity()
    return RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)): the residual stream is read and written, never replaced.
    (The ladder's ablations can drop the residual additions, the LayerNorms or the MLP.)"""

    def __init__(self, cfg: ModelConfig, residual: bool = True, layernorm: bool = True, mlp: bool = True,
                 rotary: bool = False):
        super().__init__()
        self.residual = residual
        self.ln_1 = _norm(cfg, layernorm)
        self.attn = CausalSelfAttention(cfg, rotary)
        if mlp:
            self.ln_2 = _norm(cfg, layernorm)
            self.mlp = SwiGLU(cfg) if cfg.activation == "swiglu" else MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                manual: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.ln_1(x), cache, layer, manual)
        x = x + a if self.residual else a
        if hasattr(self, "mlp"):
            m = self.mlp(self.ln_2(x))
            x = x + m if self.residual else m
        return x, weights


class GPT(LanguageModel):
    """forward(idx, targets=None) -> (logits (B, T, vocab), loss or None).

    `capture`: pass a dict to receive internals under stable names (this takes the manual attention path):
      "embed"      (B, T, C)     token + position embedding
      "attn.{i}"   (B, nh, T, T) attention weights of layer i (rows sum to 1, zero above the diagonal)
      "resid.{i}"  (B, T, C)     residual stream after block i
      "ln_f"       (B, T, C)     final LayerNorm output (what the head reads)
    `cache`: a KVCache; idx then holds only the new tokens, placed at positions cache.pos onwards.
    """

    can_cache = True
    can_capture = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        f = _features(cfg.model)
        rotary = f["pos"] and cfg.position == "rotary"
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            drop=Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg, f["residual"], f["layernorm"], f["mlp"], rotary) for _ in range(cfg.n_layer)),
            ln_f=_norm(cfg, f["layernorm"]),
        ))
        if f["pos"] and cfg.position == "learned":
            self.transformer.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # weight tying: one matrix reads and writes tokens
            self.lm_head.weight = self.transformer.wte.weight
        # (untied, tie_embeddings=False: what it fixes is one matrix serving two jobs, recognising a token at the
        # input and predicting it at the output, whose best values differ; it costs vocab × n_embd weights)
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation: normal weights (std init_std, 0.02 by default), zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: KVCache | None = None, capture: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} positions exceeds block_size {self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.transformer.drop(x)
        manual = capture is not None
        if manual:
            capture["embed"] = x
        with cached_attention_kernels(idx.device) if cache is not None else contextlib.nullcontext():
            for i, block in enumerate(self.transformer.h):
                x, weights = block(x, cache, i, manual)
                if manual:
                    capture[f"attn.{i}"] = weights
                    capture[f"resid.{i}"] = x
        if cache is not None:
            cache.pos += T
        if manual:
            capture["ln_f"] = self.transformer.ln_f(x)
        logits = self.readout(x)  # (B, T, vocab)
        return logits, None if targets is None else next_token_loss(logits, targets)

    @property
    def attention_layers(self) -> int:
        return self.config.n_layer

    @property
    def attention_heads(self) -> int:
        return self.config.n_head

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.transformer.h)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.transformer.wte

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer.ln_f(x))

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        cfg = self.config
        p = self.lm_head.weight
        return KVCache(cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.head_size,
                       device or p.device, dtype or p.dtype)
