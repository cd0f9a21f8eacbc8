"""Measuring a model: mean loss on fixed random batches (during training), the exact loss over a whole
token stream (`tinygpt eval`), and bits per character / byte, which compare across tokenizers."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .data import BatchSource
from .device import autocast
from .models import eval_mode


def bits(loss: float, tokens_per_unit: float) -> float:
    """Nats per token -> bits per character (or byte): loss / ln 2 * tokens per character.
    bits(math.log(2), 0.5) == 0.5: one bit per token, two characters per token."""
    return loss / math.log(2) * tokens_per_unit


@torch.no_grad()
def evaluate(model: nn.Module, source: BatchSource, split: str, iters: int, batch_size: int,
             seed: int, device: str, dtype: torch.dtype = torch.float32) -> float:
    """Mean loss over `iters` batches drawn with a fixed seed: the same batches at every evaluation,
    so successive figures differ only because the model changed."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with eval_mode(model):
        for _ in range(iters):
            x, y = source.get_batch(split, batch_size, gen)
            with autocast(device, dtype):
                _, loss = model(x.to(device), y.to(device))
            total += loss.item()
    return total / iters


@torch.no_grad()
def evaluate_stream(model: nn.Module, ids: Any, block_size: int, batch_size: int = 32,
                    device: str = "cpu") -> tuple[float, int]:
    """Exact mean loss over a whole token stream, cut into consecutive windows of block_size + 1 ids
    that overlap by one (every token but the first is predicted exactly once). Returns (loss, n_predicted)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    data = torch.from_numpy(np.asarray(ids).astype(np.int64))
    n = len(data) - 1
    if n < 1:
        raise ValueError("need at least 2 tokens to evaluate")
    starts = list(range(0, n, block_size))
    total, count = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            T = min(block_size, n - chunk[-1])  # the last window may be shorter
            full = [s for s in chunk if s + block_size <= n]
            groups = [(full, block_size)] + ([([chunk[-1]], T)] if T < block_size else [])
            for group, t in groups:
                if not group:
                    continue
                block = torch.stack([data[s:s + t + 1] for s in group]).to(device)
                _, loss = model(block[:, :-1], block[:, 1:])
                total += loss.item() * block[:, 1:].numel()
                count += block[:, 1:].numel()
    return total / count, count


def evaluate_text(model: nn.Module, tokenizer: Any, text: str, batch_size: int = 32,
                  device: str = "cpu") -> dict[str, Any]:
    """Exact loss of a model on a text, with perplexity and bits per character / byte of the predicted
    text (the first token is context, not predicted, so its characters are not counted)."""
    import warnings

    from .data import to_array

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = to_array(tokenizer.encode(text), tokenizer.vocab_size)
    loss, n_tokens = evaluate_stream(model, ids, model.config.block_size, batch_size, device)
    first = tokenizer.decode(ids[:1].tolist())
    n_chars = len(text) - len(first)
    n_bytes = len(text.encode("utf-8")) - len(first.encode("utf-8"))
    return {"tokens": n_tokens, "loss": loss, "perplexity": math.exp(loss) if loss < 700 else float("inf"),
            "bits_per_char": bits(loss, n_tokens / n_chars), "bits_per_byte": bits(loss, n_tokens / n_bytes),
            "unknown_chars": bool(caught)}


__all__ = ["bits", "evaluate", "evaluate_stream", "evaluate_text"]
