"""The first generation engine, rows of one length: token ids in, token ids out. It knows nothing about text.

The batched `Engine` (engine.py) runs generation now, rows of any lengths in one pass; the Decoder stays as
its reference (tests check they agree token for token) and as the record of what the model read at each step
(`windows`), which the inspect views draw. A `Decoder` holds every row's tokens so far and owns the context
window, the KV cache, the end-of-sequence ids and the order of the rows.

Context-window policy (the one copy; every path follows it, so they choose identical tokens): the model
sees at most `block_size` tokens. A prompt longer than that is cut to its last `block_size` tokens. When
generation fills the window, it slides: the model keeps the last `keep = 3/4 * block_size` tokens and
goes on (the cached path refills its cache from them once, then adds one token at a time again).
Generation therefore continues past `block_size` for as long as asked, at the cost of forgetting the
oldest text. With block_size 4 and a 3-token prompt the model reads (0, 3), (0, 4), (2, 5), (2, 6), (4, 7), ...

The phases, each a few lines: `prefill` (read the whole window into a fresh cache), `decode_one` (feed
only the newest token to the cache), `recompute` (the uncached reference: read the whole window again),
`next_logits` (whichever applies, recording the window read), `append` (add a token per row, slide the
window when full), `reorder` (keep some rows, in a new order), and `generate` (sample token after token).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from tinygpt.generation.sampling import penalize, penalized, sample_next
from tinygpt.models.base import LanguageModel


def keep_after_slide(block_size: int) -> int:
    """How many recent tokens the window keeps when it slides. keep_after_slide(256) == 192."""
    return max(1, (3 * block_size) // 4)


def prompt_start(n: int, block_size: int) -> int:
    """Where the window starts on a prompt of n tokens: its last block_size tokens. prompt_start(20, 16) == 4."""
    return max(0, n - block_size)


def slide(start: int, end: int, block_size: int) -> int:
    """Where the window starts once the sequence has `end` tokens, if it started at `start` before the
    newest one: unchanged while it fits, else the last keep_after_slide tokens. slide(0, 17, 16) == 5."""
    return end - keep_after_slide(block_size) if end - start > block_size else start


class Decoder:
    """Rows of token ids being extended together. prompt: ids (T,) or (B, T), T >= 1.

    `use_cache=False` (or a model with can_cache False) recomputes the whole window every step: slow,
    obviously right, and the reference the KV-cache path must match token for token. `eos_ids`: tokens
    that end a row; `finished` says which rows produced one (their later tokens are junk, cut by callers).
    `windows[i]` is the (start, end) slice of the full sequence the model read for step i; `window` is the
    one it would read next.

        dec = Decoder(model, [1, 2, 3])
        dec.append(dec.next_logits().argmax(-1))  # one greedy step; dec.new_tokens is now (1, 1)
    """

    def __init__(self, model: LanguageModel, prompt: Sequence[int] | torch.Tensor, *, use_cache: bool = True,
                 eos_ids: Sequence[int] = ()):
        device = next(model.parameters()).device
        seq = torch.as_tensor(prompt, dtype=torch.long, device=device)
        if seq.dim() == 1:
            seq = seq.unsqueeze(0)
        if seq.dim() != 2 or seq.size(1) == 0:
            raise ValueError("the prompt is empty: give at least one token")
        self.model = model
        self.block_size = model.config.block_size
        self.cached = use_cache and model.can_cache
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self._eos = torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=device)
        self.seq = seq  # (B, n): every token so far, prompt included
        self.prompt_len = seq.size(1)
        self.start = prompt_start(self.prompt_len, self.block_size)  # the window is seq[:, start:]
        self.cache = None
        self.finished = torch.zeros(seq.size(0), dtype=torch.bool, device=device)  # (B,)
        self.windows: list[tuple[int, int]] = []

    @property
    def window(self) -> tuple[int, int]:
        """The (start, end) slice of the sequence the model reads at the next step."""
        return self.start, self.seq.size(1)

    @property
    def new_tokens(self) -> torch.Tensor:
        """(B, n_new) the tokens generated so far."""
        return self.seq[:, self.prompt_len:]

    @property
    def all_finished(self) -> bool:
        return bool(self.eos_ids) and bool(self.finished.all())

    # --- the phases ------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self) -> torch.Tensor:
        """Read the whole window into a fresh KV cache; (B, V) logits of the next token."""
        self.cache = self.model.new_cache(self.seq.size(0))
        logits, _ = self.model(self.seq[:, self.start:], cache=self.cache)
        return logits[:, -1, :]

    @torch.inference_mode()
    def decode_one(self) -> torch.Tensor:
        """Feed only the newest token; the cache holds the rest of the window. (B, V) logits."""
        logits, _ = self.model(self.seq[:, -1:], cache=self.cache)
        return logits[:, -1, :]

    @torch.inference_mode()
    def recompute(self) -> torch.Tensor:
        """The uncached reference: read the whole window again. (B, V) logits."""
        logits, _ = self.model(self.seq[:, self.start:])
        return logits[:, -1, :]

    def next_logits(self) -> torch.Tensor:
        """(B, V) raw logits of the next token of every row, from the current window (recorded in windows)."""
        self.windows.append(self.window)
        if not self.cached:
            return self.recompute()
        return self.prefill() if self.cache is None else self.decode_one()

    @torch.inference_mode()
    def append(self, tokens: torch.Tensor) -> None:
        """Add one token (B,) to every row; mark rows that produced an eos id; slide the window when full."""
        tokens = tokens.to(self.seq.device).view(-1)
        self.seq = torch.cat([self.seq, tokens[:, None]], dim=1)
        if self.eos_ids:
            self.finished |= torch.isin(tokens, self._eos)
        start = slide(self.start, self.seq.size(1), self.block_size)
        if start != self.start:  # the window slid: the cache no longer matches it
            self.start, self.cache = start, None

    @torch.inference_mode()
    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (a (B',) index, repeats allowed) in that order, cache included (beam search)."""
        rows = rows.to(self.seq.device)
        self.seq, self.finished = self.seq[rows], self.finished[rows]
        if self.cache is not None:
            self.cache.reorder(rows)

    # --- sampling -----------------------------------------------------------------------------------
    def generate(self, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, repetition_penalty: float = 1.0,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Sample up to max_new_tokens tokens per row; yield (raw logits (B, V) it was drawn from, token (B,))
        per step. Stops early once every row has produced an eos id. temperature=0 is greedy. The penalties
        (sampling.py) apply first, greedy included. With a seed, row i draws from its own generator seeded
        seed + i (as the batched engine's rows do)."""
        generators = None
        if seed is not None:
            generators = [torch.Generator(device=self.seq.device).manual_seed(seed + i)
                          for i in range(self.seq.size(0))]
        for _ in range(max_new_tokens):
            if self.all_finished:
                return
            logits = self.next_logits()
            chosen = logits
            if penalized(repetition_penalty, frequency_penalty, presence_penalty):
                chosen = penalize(logits, self.seq, self.new_tokens, repetition_penalty, frequency_penalty,
                                  presence_penalty)
            if generators is None:
                nxt = sample_next(chosen, temperature, top_k, top_p)  # (B,)
            else:
                nxt = torch.cat([sample_next(chosen[i:i + 1], temperature, top_k, top_p, g)
                                 for i, g in enumerate(generators)])
            self.append(nxt)
            yield logits, nxt


__all__ = ["Decoder", "keep_after_slide", "prompt_start", "slide"]
