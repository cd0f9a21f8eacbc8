"""The bigram model: a lookup table of next-token logits given only the current token."""
from __future__ import annotations

import torch
import torch.nn as nn

from tinygpt.config import ModelConfig
from tinygpt.models.base import LanguageModel
from tinygpt.models.loss import next_token_loss


class BigramLM(LanguageModel):
    """Row i of the table holds the logits of the token that follows token i. No context, no attention:
    the bottom rung of the ladder, and the baseline every other model must beat."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.vocab_size)
        nn.init.normal_(self.wte.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: None = None, capture: None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_abilities(cache, capture)
        logits = self.wte(idx)  # (B, T, vocab)
        return logits, None if targets is None else next_token_loss(logits, targets)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.wte  # its rows are the logits themselves
