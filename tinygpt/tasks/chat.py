"""Chat fine-tuning as a task: conversations packed into training blocks, measured by their loss and by the
exact match of the replies.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from tinygpt.data.conversations import ChatError, Conversation, fit_conversations, pack
from tinygpt.data.text import IGNORE_INDEX
from tinygpt.generation.chat import score_replies
from tinygpt.models import eval_mode
from tinygpt.tokenizers.chat import ChatTokenizer


@torch.no_grad()
def evaluate_chat(model: nn.Module, tok: ChatTokenizer, conversations: Sequence[Conversation],
                  loss_on: str = "assistant", batch_size: int = 32, long_conversations: str = "cut"
                  ) -> dict[str, Any]:
    """A chat model on some conversations: the exact mean loss over every counted token (each conversation once,
    packed as in training, those longer than the window cut or left out as long_conversations says) and the exact
    match of its greedy replies (score_replies)."""
    conversations, _ = fit_conversations(tok, conversations, model.config.block_size, long_conversations)
    x, y = pack(tok, conversations, model.config.block_size, loss_on)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for i in range(0, x.size(0), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            n = int((yb != IGNORE_INDEX).sum())
            if n:
                total += model(xb, yb)[1].item() * n
                count += n
    return {"loss": total / max(count, 1), "tokens": count, "conversations": len(conversations),
            **score_replies(model, tok, conversations)}


class ChatData:
    """Conversations packed into training blocks (a `BatchSource`, see data/text.py).

    Each conversation is rendered once; whole conversations are packed, in a seeded shuffled order, into rows
    of block_size + 1 ids (the rest of a row is padding that counts nothing). x = row[:-1], y = row[1:] with
    IGNORE_INDEX wherever the target is not counted: outside the assistant's replies when loss_on is
    "assistant" (the mask), only on padding when it is "all". A conversation longer than a row is refused
    (data.conversations.fit_conversations cuts or leaves such ones out first, as a run's plan does).
    Batches draw rows at random. `metrics(model)` scores greedy replies on held-out conversations.
    """

    def __init__(self, train: Sequence[Conversation], val: Sequence[Conversation], tokenizer: ChatTokenizer,
                 block_size: int, loss_on: str = "assistant", seed: int = 0, score_turns: int = 200):
        if not val:
            raise ChatError("no conversation is held out for evaluation: give at least two conversations")
        self.tokenizer, self.block_size, self.loss_on = tokenizer, block_size, loss_on
        self.conversations = {"train": list(train), "val": list(val)}
        self.score_turns = score_turns
        self._rows = {split: pack(tokenizer, convs, block_size, loss_on, seed)
                      for split, convs in self.conversations.items()}

    def rows(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every packed (x, y) row of a split: (N, block_size) each."""
        if split not in self._rows:
            raise ValueError(f"unknown split {split!r} (chat data has 'train' and 'val')")
        return self._rows[split]

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.rows(split)
        pick = torch.randint(x.size(0), (batch_size,), generator=generator)
        return x[pick], y[pick]

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """Exact match of greedy replies on (an evenly spaced sample of) the held-out assistant turns."""
        scores = score_replies(model, self.tokenizer, self.conversations["val"], self.score_turns)
        return {f"val_exact_{kind}": s["accuracy"] for kind, s in scores.items() if s["total"]}
