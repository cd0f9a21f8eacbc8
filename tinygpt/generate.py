"""Text generation: a token iterator (KV-cache and uncached reference paths), stop strings, beam search.

Context-window policy (both paths follow it, so they choose identical tokens): the model sees at most
`block_size` tokens. A prompt longer than that is cut to its last `block_size` tokens. When generation
fills the window, it slides: the model keeps the last `keep = 3/4 * block_size` tokens and goes on
(the cached path rebuilds its cache from them once, then adds one token at a time again). Generation
therefore continues past `block_size` for as long as asked, at the cost of forgetting the oldest text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from .sampling import sample_next


def keep_after_slide(block_size: int) -> int:
    """How many recent tokens the window keeps when it slides. keep_after_slide(256) == 192."""
    return max(1, (3 * block_size) // 4)


def _block_size(model: nn.Module) -> int:
    return model.config.block_size


def _supports_cache(model: nn.Module) -> bool:
    return model.can_cache


def generate_tokens(model: nn.Module, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int | None = None, use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens new tokens, one (B,) tensor per step. prompt: ids (T,) or (B, T), T >= 1.

    temperature=0 is greedy. `use_cache=False` selects the uncached reference path, which recomputes
    the whole window every step (slow, obviously right); the KV-cache path must agree with it.
    """
    for _, nxt in generate_steps(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache):
        yield nxt


@torch.inference_mode()
def generate_steps(model: nn.Module, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   seed: int | None = None, use_cache: bool = True
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """generate_tokens that also shows its work: yield (logits (B, V) the token was drawn from, token (B,)).
    The logits are the model's raw output, before temperature and filtering (see interpret.trace_generation)."""
    device = next(model.parameters()).device
    idx = torch.as_tensor(prompt, dtype=torch.long, device=device)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    block, keep = _block_size(model), keep_after_slide(_block_size(model))
    cached = use_cache and _supports_cache(model)

    seq = idx  # every token so far (B, n)
    start = max(0, seq.size(1) - block)  # the window is seq[:, start:]
    cache = None
    for _ in range(max_new_tokens):
        if cached:
            if cache is None:  # (re)fill the cache from the whole window
                cache = model.new_cache(seq.size(0))
                logits, _ = model(seq[:, start:], cache=cache)
            else:  # feed only the newest token
                logits, _ = model(seq[:, -1:], cache=cache)
        else:
            logits, _ = model(seq[:, start:])
        nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B,)
        yield logits[:, -1, :], nxt
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if seq.size(1) - start > block:  # the window is full: slide it
            start = seq.size(1) - keep
            cache = None


def generate(model: nn.Module, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, **kwargs) -> list[int]:
    """All new tokens of one sequence as a list (a convenience over generate_tokens)."""
    return [int(t[0]) for t in generate_tokens(model, prompt, max_new_tokens, **kwargs)]


def generate_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int,
                  stop: Sequence[str] = (), **kwargs) -> Iterator[str]:
    """Stream the text of one generation piece by piece, stopping before the first stop string.

    Text that could be the beginning of a stop string is held back until it is clear it is not one, so
    the caller never sees any part of a stop string.
    """
    ids = tokenizer.encode(prompt)
    stop = [s for s in stop if s]
    new: list[int] = []
    emitted = 0  # characters of the decoded new text already yielded
    for tok in generate_tokens(model, ids, max_new_tokens, **kwargs):
        new.append(int(tok[0]))
        text = tokenizer.decode(new)
        hits = [text.find(s, max(0, emitted - len(s))) for s in stop]
        hits = [h for h in hits if h >= 0]
        if hits:
            cut = min(hits)
            if cut > emitted:
                yield text[emitted:cut]
            return
        safe = len(text)
        if text.endswith("\N{REPLACEMENT CHARACTER}"):
            safe -= 1  # possibly half of a multi-byte character (byte-level tokenizers): wait for the rest
        for s in stop:  # hold back a suffix that is a proper prefix of a stop string
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    safe = min(safe, len(text) - n)
                    break
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
    text = tokenizer.decode(new)
    if len(text) > emitted:
        yield text[emitted:]


@dataclass
class Beam:
    tokens: list[int]
    logprob: float
    score: float  # logprob / len**length_penalty: what beams are ranked by once finished


@torch.inference_mode()
def beam_search(model: nn.Module, prompt: Sequence[int], max_new_tokens: int, num_beams: int = 4,
                length_penalty: float = 1.0, eos_id: int | None = None) -> list[Beam]:
    """Keep the `num_beams` most probable continuations at every step; return them best first.

    A beam that produces `eos_id` is finished; the search stops once `num_beams` beams have finished
    (Hugging Face's early_stopping=True) or after max_new_tokens. Beams are ranked by
    logprob / (new length ** length_penalty): 1.0 is a per-token average, 0 the raw sum (favours short).
    Uses the same context-window policy and KV cache as generate_tokens.
    """
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    device = next(model.parameters()).device
    seq = torch.as_tensor(list(prompt), dtype=torch.long, device=device)[None, :]  # (1, n)
    if seq.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token")
    block, keep = _block_size(model), keep_after_slide(_block_size(model))
    cached = _supports_cache(model)
    start = max(0, seq.size(1) - block)
    n_prompt = seq.size(1)
    scores = torch.zeros(1, device=device)  # (beams,) summed log-probs
    finished: list[Beam] = []
    cache = None

    def rank(logprob: float, length: int) -> float:
        return logprob / (max(length, 1) ** length_penalty)

    for _ in range(max_new_tokens):
        if cached and cache is not None:
            logits, _ = model(seq[:, -1:], cache=cache)
        elif cached:
            cache = model.new_cache(seq.size(0))
            logits, _ = model(seq[:, start:], cache=cache)
        else:
            logits, _ = model(seq[:, start:])
        logp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)  # (beams, V)
        V = logp.size(-1)
        total = (scores[:, None] + logp).view(-1)  # (beams * V,)
        top, flat = torch.topk(total, min(2 * num_beams, total.numel()))  # spare candidates replace eos ones
        keep_rows, keep_tok, keep_scores = [], [], []
        for s, f in zip(top.tolist(), flat.tolist()):
            row, tok = divmod(f, V)
            if eos_id is not None and tok == eos_id:
                toks = seq[row, n_prompt:].tolist() + [tok]
                finished.append(Beam(toks, s, rank(s, len(toks))))
                continue
            keep_rows.append(row)
            keep_tok.append(tok)
            keep_scores.append(s)
            if len(keep_rows) == num_beams:
                break
        if len(finished) >= num_beams or not keep_rows:
            break  # like Hugging Face's early_stopping=True: enough beams have ended
        rows = torch.tensor(keep_rows, device=device)
        seq = torch.cat([seq[rows], torch.tensor(keep_tok, device=device)[:, None]], dim=1)
        scores = torch.tensor(keep_scores, device=device)
        if cache is not None:
            cache.reorder(rows)
        if seq.size(1) - start > block:
            start = seq.size(1) - keep
            cache = None
    live = [Beam(seq[i, n_prompt:].tolist(), float(scores[i]), rank(float(scores[i]), seq.size(1) - n_prompt))
            for i in range(seq.size(0))]
    # once num_beams beams have ended, the unfinished ones are not candidates (they stopped mid-way)
    beams = sorted(finished if len(finished) >= num_beams else finished + live, key=lambda b: b.score, reverse=True)
    return beams[:num_beams]
