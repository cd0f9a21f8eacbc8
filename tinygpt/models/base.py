"""The model interface: what every model in the zoo is, and what it declares it can do.

Every model is a `LanguageModel`:

    forward(idx (B, T), targets (B, T) | None = None, *, cache=None, capture=None) -> (logits (B, T, V), loss | None)

Callers never probe a model with `hasattr` or by its name; they read its declared abilities:

    can_cache           new_cache() and forward(..., cache=cache) (the KV cache for generation)
    can_cache_rows      new_row_cache() and forward(..., cache=row_cache) (the batched engine's cache: a slot
                        per row, each row at its own position); without it the engine recomputes each window
    can_capture         forward(..., capture=dict) fills named internals ("embed", "attn.{i}", "resid.{i}", ...)
    attention_layers    how many layers of attention weights `capture` returns (0: none)
    attention_heads     heads per such layer
    token_embedding     the nn.Embedding that turns ids into vectors (saliency perturbs its output)
    readout(x)          what every position goes through at the end (final norm, then the output head)
    blocks              the repeated layers, in order (FSDP makes each its own unit); empty if none

A model asked for something it cannot do raises `Unsupported` with a one-line reason.
"""
from __future__ import annotations

import contextlib
from typing import ClassVar, Iterator

import torch
import torch.nn as nn

from tinygpt.config import ModelConfig


class Unsupported(ValueError):
    """A model was asked for an ability it does not have; the message is one line, fit for the CLI."""


class LanguageModel(nn.Module):
    """Base class of every model in the zoo. Subclasses set the class flags and override what they support."""

    can_cache: ClassVar[bool] = False
    can_cache_rows: ClassVar[bool] = False
    can_capture: ClassVar[bool] = False
    config: ModelConfig

    @property
    def name(self) -> str:
        """The model type as in ModelConfig.model ("gpt", "bigram", ...)."""
        return self.config.model

    @property
    def attention_layers(self) -> int:
        return 0

    @property
    def attention_heads(self) -> int:
        return 0

    @property
    def blocks(self) -> list[nn.Module]:
        return []

    @property
    def token_embedding(self) -> nn.Embedding:
        raise Unsupported(f"the {self.name} model has no token embedding")

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) hidden states -> (..., V) logits, exactly as the last position of forward computes them."""
        raise Unsupported(f"the {self.name} model has no hidden states to read out")

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, max_len: int | None = None):
        raise Unsupported(f"the {self.name} model has no KV cache")

    def new_row_cache(self, slots: int):
        raise Unsupported(f"the {self.name} model has no KV cache")

    def _check_abilities(self, cache: object, capture: object) -> None:
        """Refuse a cache or capture request this model cannot honour (instead of silently ignoring it)."""
        if cache is not None and not self.can_cache:
            raise Unsupported(f"the {self.name} model has no KV cache")
        if capture is not None and not self.can_capture:
            raise Unsupported(f"the {self.name} model has no internals to capture")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put a model in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


__all__ = ["LanguageModel", "Unsupported", "eval_mode"]
