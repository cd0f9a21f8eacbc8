"""The loss every model shares: cross-entropy of the next token, with masked positions left out."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1  # a target equal to this does not count (padding, or the question part of a task)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over unmasked positions. logits (B, T, V), targets (B, T). Computed in fp32."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
