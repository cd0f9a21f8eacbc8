"""From next-token logits to a token: repetition penalties, temperature, top-k, top-p (nucleus) filtering,
greedy and sampling.

The three penalties are the ones clients send (Hugging Face's `repetition_penalty`, OpenAI's
`frequency_penalty` and `presence_penalty`), applied to the raw logits before temperature and filtering:

- repetition_penalty r (CTRL, Keskar et al. 2019; 1 is off): every token already in the row, prompt included,
  has its logit divided by r when positive and multiplied by r when negative, so r > 1 always makes it less
  likely.
- frequency_penalty f and presence_penalty p (OpenAI's, each in [-2, 2]; 0 is off): a token generated c times
  so far loses f * c + p * (c > 0) from its logit. They count the generated tokens only, not the prompt's
  (as vLLM does): a reply is discouraged from repeating itself, not from using the question's words.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

PENALTY_RANGE = 2.0  # OpenAI's bound on frequency_penalty and presence_penalty


def check_settings(temperature: float, top_k: int | None = None, top_p: float | None = None,
                   repetition_penalty: float = 1.0, frequency_penalty: float = 0.0,
                   presence_penalty: float = 0.0) -> None:
    """Refuse sampling settings that make no sense, with a one-line message (NaN included)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError("temperature must be a number >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError("repetition_penalty must be a number > 0 (1 means no penalty)")
    for name, value in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
        if not (math.isfinite(value) and -PENALTY_RANGE <= value <= PENALTY_RANGE):
            raise ValueError(f"{name} must be a number in [-{PENALTY_RANGE:g}, {PENALTY_RANGE:g}] (0 means none)")


def penalized(repetition_penalty: float = 1.0, frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> bool:
    """Whether any penalty is switched on (callers skip the work when none is)."""
    return repetition_penalty != 1.0 or frequency_penalty != 0.0 or presence_penalty != 0.0


def _counts(rows: Sequence[Sequence[int] | torch.Tensor], vocab: int, device: torch.device) -> torch.Tensor:
    """(B, V) how many times each token id occurs in each row."""
    counts = torch.zeros(len(rows), vocab, device=device)
    for b, row in enumerate(rows):
        ids = torch.as_tensor(row, dtype=torch.long, device=device).view(-1)
        if ids.numel():
            counts[b].scatter_add_(0, ids, torch.ones(ids.numel(), device=device))
    return counts


def penalize(logits: torch.Tensor, seen: Sequence[Sequence[int] | torch.Tensor],
             generated: Sequence[Sequence[int] | torch.Tensor], repetition_penalty: float = 1.0,
             frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> torch.Tensor:
    """(B, V) raw logits with the penalties applied (see the module docstring), as float32.

    seen[b]: every token of row b so far, prompt and generated (what repetition_penalty reads);
    generated[b]: the tokens row b has generated (what the frequency and presence penalties count).
    With every penalty off the logits come back unchanged (as float32).
    """
    logits = logits.float()
    if not penalized(repetition_penalty, frequency_penalty, presence_penalty):
        return logits
    V = logits.size(-1)
    if repetition_penalty != 1.0:
        present = _counts(seen, V, logits.device) > 0
        scaled = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(present, scaled, logits)
    if frequency_penalty != 0.0 or presence_penalty != 0.0:
        counts = _counts(generated, V, logits.device)
        logits = logits - frequency_penalty * counts - presence_penalty * (counts > 0).float()
    return logits


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
