"""Generation on the `Decoder` engine: sampled tokens, beam search, and the text layer above them (stop
strings, end-of-text, UTF-8 pieces held back until complete).

Everything here is a thin loop over decoder.py, which owns the context window (see its docstring: a long
prompt keeps its last block_size tokens; a full window slides to keep its last 3/4), the KV cache, the
end-of-sequence ids and the row order. `use_cache=False` selects the uncached reference path everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from tinygpt.generation.decoder import Decoder
from tinygpt.models.base import LanguageModel
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, Tokenizer, WordTokenizer

END_OF_TEXT = ("<|endoftext|>", "<eos>")  # special tokens that end a text, in order of preference


# --- tokens --------------------------------------------------------------------------------------

def generate_tokens(model: LanguageModel, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int | None = None, use_cache: bool = True, eos_ids: Sequence[int] = ()
                    ) -> Iterator[torch.Tensor]:
    """Yield up to max_new_tokens new tokens, one (B,) tensor per step, after prompt ids (T,) or (B, T), T >= 1.
    temperature=0 is greedy; every row stops at one of eos_ids (that token included). use_cache=False takes the
    uncached reference path (the whole window recomputed every step), which the KV-cache path must agree with."""
    dec = Decoder(model, prompt, use_cache=use_cache, eos_ids=eos_ids)
    for _, nxt in dec.generate(max_new_tokens, temperature, top_k, top_p, seed):
        yield nxt


def generate(model: LanguageModel, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, **kwargs) -> list[int]:
    """All new tokens of one sequence as a list (a convenience over generate_tokens)."""
    return [int(t[0]) for t in generate_tokens(model, prompt, max_new_tokens, **kwargs)]


def greedy_batch(model: LanguageModel, prompts: Sequence[Sequence[int]], max_new_tokens: int | Callable[[int], int],
                 eos_ids: Sequence[int], batch_size: int = 2048) -> list[list[int]]:
    """Greedy continuations of many prompts (what exact-match scoring reads), each up to and including its first
    eos id. max_new_tokens: a number, or a function of the prompt length. Prompts of equal length run together
    as one batch on one Decoder (prefilled once into the KV cache, then a token per step), which stops as soon
    as every row has ended. The reference is generate(temperature=0) one prompt at a time; they agree."""
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    eos = {int(e) for e in eos_ids}
    out: list[list[int]] = [[] for _ in prompts]
    for length, members in by_len.items():
        steps = max_new_tokens(length) if callable(max_new_tokens) else max_new_tokens
        for s in range(0, len(members), batch_size):
            chunk = members[s:s + batch_size]
            dec = Decoder(model, [list(prompts[i]) for i in chunk], eos_ids=list(eos))
            for _ in dec.generate(steps, temperature=0):  # greedy: lowest id on ties
                pass
            for i, row in zip(chunk, dec.new_tokens.tolist()):
                end = next((k for k, t in enumerate(row) if t in eos), None)
                out[i] = row if end is None else row[:end + 1]
    return out


# --- beam search ---------------------------------------------------------------------------------

@dataclass
class Beam:
    tokens: list[int]
    logprob: float
    score: float  # logprob / len**length_penalty: what beams are ranked by once finished


def beam_search(model: LanguageModel, prompt: Sequence[int], max_new_tokens: int, num_beams: int = 4,
                length_penalty: float = 1.0, eos_ids: Sequence[int] = (),
                ends: Callable[[list[int]], bool] | None = None, use_cache: bool = True) -> list[Beam]:
    """Keep the `num_beams` most probable continuations at every step; return them best first.

    A beam is finished when it produces one of `eos_ids` (kept as its last token) or when `ends(tokens)`
    says so (the text layer's stop strings); the search stops once `num_beams` beams have finished
    (Hugging Face's early_stopping=True) or after max_new_tokens. Beams are ranked by
    logprob / (new length ** length_penalty): 1.0 is a per-token average, 0 the raw sum (favours short).
    """
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    dec = Decoder(model, list(prompt), use_cache=use_cache, eos_ids=eos_ids)
    device = dec.seq.device
    scores = torch.zeros(1, device=device)  # (beams,) summed log-probs
    finished: list[Beam] = []

    def rank(logprob: float, length: int) -> float:
        return logprob / (max(length, 1) ** length_penalty)

    for _ in range(max_new_tokens):
        logp = torch.log_softmax(dec.next_logits().float(), dim=-1)  # (beams, V)
        V = logp.size(-1)
        total = (scores[:, None] + logp).view(-1)  # (beams * V,)
        top, flat = torch.topk(total, min(2 * num_beams, total.numel()))  # spare candidates replace ended ones
        rows, toks, kept = [], [], []
        for s, f in zip(top.tolist(), flat.tolist()):
            row, tok = divmod(f, V)
            if tok in dec.eos_ids or (ends is not None and ends(dec.new_tokens[row].tolist() + [tok])):
                tokens = dec.new_tokens[row].tolist() + [tok]  # this candidate ends its beam
                finished.append(Beam(tokens, s, rank(s, len(tokens))))
                continue
            rows.append(row)
            toks.append(tok)
            kept.append(s)
            if len(rows) == num_beams:
                break
        if len(finished) >= num_beams or not rows:
            break  # like Hugging Face's early_stopping=True: enough beams have ended
        dec.reorder(torch.tensor(rows, device=device))
        dec.append(torch.tensor(toks, device=device))
        scores = torch.tensor(kept, device=device)
    n = dec.new_tokens.size(1)
    live = [Beam(dec.new_tokens[i].tolist(), float(scores[i]), rank(float(scores[i]), n))
            for i in range(dec.seq.size(0))]
    # once num_beams beams have ended, the unfinished ones are not candidates (they stopped mid-way)
    beams = sorted(finished if len(finished) >= num_beams else finished + live, key=lambda b: b.score, reverse=True)
    return beams[:num_beams]


# --- text ----------------------------------------------------------------------------------------

def end_of_text_id(tokenizer: Tokenizer) -> int | None:
    """The id of the tokenizer's end-of-text special token ("<|endoftext|>", else "<eos>"), or None."""
    if isinstance(tokenizer, ByteBPETokenizer):
        ids = tokenizer.special_ids
    elif isinstance(tokenizer, (CharTokenizer, WordTokenizer)):
        ids = {s: i for i, s in enumerate(tokenizer.specials)}  # their specials take the first ids
    else:
        return None
    return next((ids[s] for s in END_OF_TEXT if s in ids), None)


def _before_stop(text: str, stop: Sequence[str]) -> str:
    """text up to (not including) the earliest stop string in it."""
    hits = [h for h in (text.find(s) for s in stop) if h >= 0]
    return text[:min(hits)] if hits else text


def generate_text(model: LanguageModel, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
                  stop: Sequence[str] = (), eos_ids: Sequence[int] = (), **kwargs) -> Iterator[str]:
    """Stream the text of one generation piece by piece, stopping before the first stop string or at an
    end-of-text token (eos_ids, not printed). kwargs: the sampling settings of generate_tokens. The text
    layer is `text_pieces`."""
    tokens = (int(t[0]) for t in generate_tokens(model, tokenizer.encode(prompt), max_new_tokens, eos_ids=eos_ids,
                                                 **kwargs))
    yield from text_pieces(tokenizer, tokens, stop, eos_ids)


def text_pieces(tokenizer: Tokenizer, tokens: Iterable[int], stop: Sequence[str] = (),
                eos_ids: Sequence[int] = ()) -> Iterator[str]:
    """The text layer: new token ids in, one at a time, text pieces out, stopping before the first stop string
    or at an end-of-text token (eos_ids, not printed). It pulls a token only when it needs one, so whoever
    feeds it knows which tokens a piece came from (the server's per-token log-probabilities).

    Text that could be the beginning of a stop string is held back until it is clear it is not one, so
    the caller never sees any part of a stop string; so is a trailing U+FFFD, possibly half of a
    multi-byte character from a byte-level tokenizer.
    """
    stop = [s for s in stop if s]
    eos = {int(i) for i in eos_ids}
    new: list[int] = []
    emitted = 0  # characters of the decoded new text already yielded
    for tok in tokens:
        if int(tok) in eos:
            break
        new.append(int(tok))
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


def beam_search_text(model: LanguageModel, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
                     num_beams: int = 4, length_penalty: float = 1.0, stop: Sequence[str] = (),
                     eos_ids: Sequence[int] = (), use_cache: bool = True) -> list[tuple[str, Beam]]:
    """beam_search on text, best first: (the beam's text, cut before any stop string, the beam). A beam ends
    when it produces an end-of-text id (eos_ids, not part of the text) or when its text contains a stop
    string: stop strings end beams during the search, so a finished beam is ranked on what it keeps."""
    stop = [s for s in stop if s]
    ends = (lambda tokens: any(s in tokenizer.decode(tokens) for s in stop)) if stop else None
    eos = {int(i) for i in eos_ids}
    beams = beam_search(model, tokenizer.encode(prompt), max_new_tokens, num_beams, length_penalty, eos_ids, ends,
                        use_cache)
    return [(_before_stop(tokenizer.decode(b.tokens[:-1] if b.tokens and b.tokens[-1] in eos else b.tokens), stop), b)
            for b in beams]


__all__ = ["generate_tokens", "generate", "greedy_batch", "Beam", "beam_search", "END_OF_TEXT", "end_of_text_id", "generate_text",
           "text_pieces", "beam_search_text"]
