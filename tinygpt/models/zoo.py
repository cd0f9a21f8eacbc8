"""The teaching rungs of the ladder: self-attention written the way it is taught, one `Head` at a time.

single_head: embeddings -> one causal self-attention head as wide as the embedding -> output head.
multi_head:  embeddings -> n_head smaller heads side by side, concatenated and projected -> output head.
Both are deliberately plain (a Python loop over Head modules); `CausalSelfAttention` in attention.py is
the same computation batched over heads, and a test copies weights between them to show it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.config import ModelConfig
from tinygpt.models.base import LanguageModel
from tinygpt.models.loss import next_token_loss


class Head(nn.Module):
    """One head: each position asks (query) and offers (key, value); it mixes the values of the positions
    before it, weighted by softmax(q·k / sqrt(head_size))."""

    def __init__(self, n_embd: int, head_size: int, block_size: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        self.value = nn.Linear(n_embd, head_size, bias=bias)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size, dtype=torch.bool)), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C) -> (output (B, T, head_size), weights (B, T, T))."""
        T = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, hs) each
        scores = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5  # (B, T, T): how much t attends to s
        scores = scores.masked_fill(~self.tril[:T, :T], float("-inf"))  # no peeking at the future
        weights = F.softmax(scores, dim=-1)
        return self.dropout(weights) @ v, weights


class MultiHeadAttention(nn.Module):
    """Several heads in parallel, each looking for something different; their outputs are concatenated
    and mixed by one linear projection."""

    def __init__(self, n_head: int, n_embd: int, block_size: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        head_size = n_embd // n_head
        self.heads = nn.ModuleList(Head(n_embd, head_size, block_size, dropout, bias) for _ in range(n_head))
        self.proj = nn.Linear(n_head * head_size, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [h(x) for h in self.heads]
        y = torch.cat([o for o, _ in outs], dim=-1)  # (B, T, n_head * head_size)
        return self.dropout(self.proj(y)), torch.stack([w for _, w in outs], dim=1)  # weights (B, nh, T, T)


class AttentionLM(LanguageModel):
    """Token + position embeddings -> one attention layer -> output head. model = single_head | multi_head."""

    can_capture = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        if cfg.model == "single_head":
            self.sa = Head(cfg.n_embd, cfg.n_embd, cfg.block_size, cfg.dropout)
        else:
            self.sa = MultiHeadAttention(cfg.n_head, cfg.n_embd, cfg.block_size, cfg.dropout)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, cache: None = None,
                capture: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_abilities(cache, capture)
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} positions exceeds block_size {self.config.block_size}")
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        y, weights = self.sa(x)
        if capture is not None:
            capture["embed"] = x
            capture["attn.0"] = weights if weights.dim() == 4 else weights[:, None]  # (B, nh, T, T)
            capture["resid.0"] = y
        logits = self.lm_head(y)  # (B, T, vocab)
        return logits, None if targets is None else next_token_loss(logits, targets)

    @property
    def attention_layers(self) -> int:
        return 1

    @property
    def attention_heads(self) -> int:
        return 1 if isinstance(self.sa, Head) else len(self.sa.heads)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.wte

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x)
