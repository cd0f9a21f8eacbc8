"""Measuring a model: mean loss on fixed random batches (during training), the exact loss over a whole
token stream (`tinygpt eval`), and bits per character / byte, which compare across tokenizers."""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from tinygpt.config import SettingText
from tinygpt.data.prepare import open_prepared, prepared_tokenizer
from tinygpt.data.text import BatchSource, DataError, to_array
from tinygpt.device import autocast
from tinygpt.models import eval_mode

Progress = Callable[[int, int], None]  # progress(windows done, windows in all)


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
                    device: str = "cpu", progress: Progress | None = None) -> tuple[float, int]:
    """Exact mean loss over a whole token stream, cut into consecutive windows of block_size + 1 ids
    that overlap by one (every token but the first is predicted exactly once). Returns (loss, n_predicted).
    progress(done, total) hears of the windows evaluated after each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    data = np.asarray(ids)  # windows become int64 one batch at a time: a memory-mapped stream stays on disk
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
                block = torch.from_numpy(np.stack([data[s:s + t + 1] for s in group]).astype(np.int64)).to(device)
                _, loss = model(block[:, :-1], block[:, 1:])
                total += loss.item() * block[:, 1:].numel()
                count += block[:, 1:].numel()
            if progress is not None:
                progress(i + len(chunk), len(starts))
    return total / count, count


def evaluate_text(model: nn.Module, tokenizer: Any, text: str, batch_size: int = 32,
                  device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """Exact loss of a model on a text, with perplexity and bits per character / byte of the predicted
    text (the first token is context, not predicted, so its characters are not counted)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = to_array(tokenizer.encode(text), tokenizer.vocab_size)
    return {**evaluate_ids(model, tokenizer, ids, len(text), len(text.encode("utf-8")), batch_size, device,
                           progress), "unknown_chars": bool(caught)}


def evaluate_ids(model: nn.Module, tokenizer: Any, ids: Any, n_chars: int, n_bytes: int, batch_size: int = 32,
                 device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """evaluate_text's figures for a text already encoded: `ids`, of a text of n_chars characters and n_bytes
    UTF-8 bytes (the first token's are not counted: it is context, not predicted)."""
    loss, n_tokens = evaluate_stream(model, ids, model.config.block_size, batch_size, device, progress)
    first = tokenizer.decode([int(ids[0])])
    n_chars -= len(first)
    n_bytes -= len(first.encode("utf-8"))
    return {"tokens": n_tokens, "loss": loss, "perplexity": math.exp(loss) if loss < 700 else float("inf"),
            "bits_per_char": bits(loss, n_tokens / n_chars), "bits_per_byte": bits(loss, n_tokens / n_bytes)}


def evaluate_prepared(model: nn.Module, tokenizer: Any, path: Any, split: str = "val", batch_size: int = 32,
                      device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """evaluate_text's figures on a split of prepared data (prepare.py), read memory-mapped: "train", "val", or
    "all" (the two splits' ids one after the other)."""
    if prepared_tokenizer(path) != tokenizer:
        raise DataError(SettingText(f"{path} was prepared with another tokenizer than the model's; prepare the text "
                                    f"again with `tokenizer` set to the run's tokenizer.json", "tokenizer"))
    data = open_prepared(path, 1)
    parts = ("train", "val") if split == "all" else (split,)
    ids = np.concatenate([data.split(k) for k in parts]) if split == "all" else data.split(split)
    if len(ids) < 2:
        raise DataError(f"the {split} split of {path} is too short to evaluate")
    for k in parts:
        data.check_ids(data.split(k), k)
    unk = getattr(tokenizer, "unk_id", None)  # characters a character vocabulary had not seen
    return {**evaluate_ids(model, tokenizer, ids, sum(data.chars[k] for k in parts),
                           sum(data.bytes[k] for k in parts), batch_size, device, progress),
            "unknown_chars": unk is not None and bool(np.any(ids == unk))}


__all__ = ["bits", "evaluate", "evaluate_stream", "evaluate_text", "evaluate_ids", "evaluate_prepared"]
