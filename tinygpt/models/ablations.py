"""The ladder's ablations: the GPT with one piece switched off, to measure what that piece buys.

Each variant's name switches off one piece; everything else (sizes, initialisation, training) stays as in the
GPT. The pieces that are left keep their GPT-2 names, so the variants' checkpoints read like the GPT's.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from tinygpt.config import ModelConfig
from tinygpt.models.attention import CausalSelfAttention, KVCache
from tinygpt.models.gpt import GPT, feed_forward, norm

# The full GPT and its ablations: "what breaks if you remove it".
VARIANTS: dict[str, dict[str, bool]] = {
    "gpt": {},
    "gpt_no_pos": {"pos": False},            # no position embedding: attention sees a bag of tokens
    "gpt_no_residual": {"residual": False},  # blocks replace the stream instead of adding to it
    "gpt_no_layernorm": {"layernorm": False},
    "gpt_no_mlp": {"mlp": False},            # attention only: no per-position computation
}


def switches(model: str) -> dict[str, bool]:
    """Which pieces a variant keeps: switches("gpt_no_mlp")["mlp"] is False, the others True."""
    return {"pos": True, "residual": True, "layernorm": True, "mlp": True, **VARIANTS[model]}


class AblatedBlock(nn.Module):
    """gpt.py's Block with switches: residual=False replaces the stream with each part's output instead of
    adding it; layernorm=False puts identities in the norms' place; mlp=False leaves out the MLP and its norm."""

    def __init__(self, cfg: ModelConfig, rotary: bool, residual: bool, layernorm: bool, mlp: bool):
        super().__init__()
        self.residual = residual
        self.ln_1 = norm(cfg) if layernorm else nn.Identity()
        self.attn = CausalSelfAttention(cfg, rotary)
        self.mlp: nn.Module | None = None
        if mlp:
            self.ln_2 = norm(cfg) if layernorm else nn.Identity()
            self.mlp = feed_forward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._after_attention(x, self.attn(self.ln_1(x)))

    def forward_cached(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        return self._after_attention(x, self.attn.forward_cached(self.ln_1(x), cache, layer))

    def forward_with_weights(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        a, weights = self.attn.forward_with_weights(self.ln_1(x), cache, layer)
        return self._after_attention(x, a), weights

    def _after_attention(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The rest of the block, given the stream x and attention's output a."""
        x = x + a if self.residual else a
        if self.mlp is not None:
            m = self.mlp(self.ln_2(x))
            x = x + m if self.residual else m
        return x


class AblatedGPT(GPT):
    """The GPT less the piece its cfg.model switches off (VARIANTS); GPT's own forward passes run it."""

    model_types = tuple(name for name in VARIANTS if name != "gpt")

    def new_block(self) -> nn.Module:
        on = switches(self.config.model)
        return AblatedBlock(self.config, on["pos"] and self.config.position == "rotary", on["residual"],
                            on["layernorm"], on["mlp"])

    def new_norm(self) -> nn.Module:
        return norm(self.config) if switches(self.config.model)["layernorm"] else nn.Identity()

    def learned_positions(self) -> bool:
        return switches(self.config.model)["pos"] and self.config.position == "learned"
