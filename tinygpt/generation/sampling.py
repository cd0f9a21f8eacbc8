"""From next-token logits to a token: temperature, top-k, top-p (nucleus) filtering, greedy and sampling."""
from __future__ import annotations

import math

import torch


def check_settings(temperature: float, top_k: int | None = None, top_p: float | None = None) -> None:
    """Refuse sampling settings that make no sense, with a one-line message (NaN included)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError("temperature must be a number >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Reshape a (..., V) logit tensor the way sampling sees it: divide by temperature, then set every
    token outside the top-k and outside the top-p nucleus to -inf. Temperature must be > 0 here.

    Ties at the k-th value keep exactly k tokens (lowest ids first): we scatter the kept indices into a
    -inf tensor rather than comparing against the k-th value, which would keep every tied token.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for filtering; use greedy decoding for temperature 0")
    logits = logits.float() / temperature
    V = logits.size(-1)
    if top_k is not None and 0 < top_k < V:
        vals, idx = torch.topk(logits, top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, vals)
    if top_p is not None and top_p < 1.0:
        if top_p <= 0:
            raise ValueError("top_p must be in (0, 1]")
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p; the top token always stays
        cum_before = torch.cumsum(probs, dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(cum_before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. temperature == 0 means greedy (argmax, lowest id on ties)."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
