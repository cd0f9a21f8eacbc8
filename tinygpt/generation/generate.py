"""Generation on the batched `Engine` (engine.py): sampled tokens, greedy answers to many prompts, beam search,
and the text layer above them (stop strings, end-of-text, UTF-8 pieces held back until complete).

Everything here is a thin loop over the engine, which owns the context window (decoder.py's policy: a long
prompt keeps its last block_size tokens; a full window slides to keep its last 3/4), the KV cache, the end ids
and each row's sampling. Rows of a batch may have different lengths. `use_cache=False` selects the uncached
reference path everywhere. Row i of a batch sampled with `seed` draws from its own generator, seeded seed + i,
so row 0 of a batch is the text generated alone with that seed.

The sampling settings every entry point takes: temperature (0 is greedy), top_k, top_p, seed, and the three
penalties (repetition_penalty, frequency_penalty, presence_penalty; sampling.py), applied before the others,
to greedy decoding too. `compile=True` compiles the decoding step (engine.py: worth it for long generations
only, see worth_compiling).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from tinygpt.generation.engine import GREEDY, Engine, Row, Sampling
from tinygpt.models.base import LanguageModel
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, Tokenizer, WordTokenizer

END_OF_TEXT = ("<|endoftext|>", "<eos>")  # special tokens that end a text, in order of preference


# --- tokens --------------------------------------------------------------------------------------

def _prompt_rows(prompt: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor) -> list[list[int]]:
    """Prompt ids (T,) or rows of them (B, T) as lists (rows may differ in length)."""
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    prompt = list(prompt)
    if prompt and isinstance(prompt[0], (list, tuple)):
        return [list(map(int, p)) for p in prompt]
    return [list(map(int, prompt))]


def generate_tokens(model: LanguageModel, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int | None = None, use_cache: bool = True, eos_ids: Sequence[int] = (),
                    repetition_penalty: float = 1.0, frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                    compile: bool = False) -> Iterator[torch.Tensor]:
    """Yield up to max_new_tokens new tokens, one (B,) tensor per step, after prompt ids (T,), or (B, T), or B
    lists of any lengths, each at least one token. temperature=0 is greedy; every row stops at one of eos_ids
    (that token included; a row that has ended repeats it until every row has). Row i samples with seed + i.
    use_cache=False takes the uncached reference path (the whole window recomputed every step), which the
    KV-cache path must agree with. compile: the compiled decoding step (engine.py)."""
    rows = _prompt_rows(prompt)
    sampling = Sampling(temperature, top_k, top_p, repetition_penalty, frequency_penalty, presence_penalty)
    engine = Engine(model, use_cache=use_cache, compile=compile, slots=len(rows))
    live = [engine.add(p, sampling, None if seed is None else seed + i, eos_ids) for i, p in enumerate(rows)]
    for _ in range(max_new_tokens):
        going = [r for r in live if not r.finished]
        if not going:
            return
        engine.step(going)
        yield torch.tensor([r.tokens[-1] for r in live], device=engine.device)


def generate(model: LanguageModel, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, **kwargs) -> list[int]:
    """All new tokens of one sequence as a list (a convenience over generate_tokens)."""
    return [int(t[0]) for t in generate_tokens(model, prompt, max_new_tokens, **kwargs)]


def greedy_batch(model: LanguageModel, prompts: Sequence[Sequence[int]], max_new_tokens: int | Callable[[int], int],
                 eos_ids: Sequence[int], batch_size: int = 2048, use_cache: bool = True) -> list[list[int]]:
    """Greedy continuations of many prompts (what exact-match scoring reads), each up to and including its first
    eos id. max_new_tokens: a number, or a function of the prompt length. Up to batch_size prompts, of any
    lengths, run together on one Engine; a prompt that ends (its eos id or its budget) leaves and the next one
    joins. The reference is generate(temperature=0) one prompt at a time; they agree."""
    engine = Engine(model, use_cache=use_cache, slots=min(batch_size, len(prompts)))
    out: list[list[int]] = [[] for _ in prompts]
    waiting = deque(range(len(prompts)))
    live: dict[Row, tuple[int, int]] = {}  # row -> (prompt index, its budget)
    while waiting or live:
        while waiting and len(live) < batch_size:
            i = waiting.popleft()
            steps = max_new_tokens(len(prompts[i])) if callable(max_new_tokens) else max_new_tokens
            if steps > 0:
                live[engine.add(prompts[i], GREEDY, eos_ids=eos_ids)] = (i, steps)
        rows = list(live)
        engine.step(rows)
        for row in rows:
            i, steps = live[row]
            if row.finished or len(row.new_tokens) >= steps:
                out[i] = row.new_tokens
                engine.remove(row)
                del live[row]
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
    The beams are the engine's rows: a beam chosen twice forks (its slot is copied), one not chosen leaves.
    """
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    engine = Engine(model, use_cache=use_cache, slots=num_beams)
    eos = {int(i) for i in eos_ids}
    beams = [engine.add(list(prompt), GREEDY, eos_ids=eos_ids)]
    scores = torch.zeros(1, device=engine.device)  # (beams,) summed log-probs
    finished: list[Beam] = []

    def rank(logprob: float, length: int) -> float:
        return logprob / (max(length, 1) ** length_penalty)

    for _ in range(max_new_tokens):
        logp = torch.log_softmax(engine.logits(beams).float(), dim=-1)  # (beams, V)
        V = logp.size(-1)
        total = (scores[:, None] + logp).view(-1)  # (beams * V,)
        top, flat = torch.topk(total, min(2 * num_beams, total.numel()))  # spare candidates replace ended ones
        rows, toks, kept = [], [], []
        for s, f in zip(top.tolist(), flat.tolist()):
            row, tok = divmod(f, V)
            if tok in eos or (ends is not None and ends(beams[row].new_tokens + [tok])):
                tokens = beams[row].new_tokens + [tok]  # this candidate ends its beam
                finished.append(Beam(tokens, s, rank(s, len(tokens))))
                continue
            rows.append(row)
            toks.append(tok)
            kept.append(s)
            if len(rows) == num_beams:
                break
        if len(finished) >= num_beams or not rows:
            break  # like Hugging Face's early_stopping=True: enough beams have ended
        chosen, taken = [], set()
        for row in rows:  # every fork is made before any beam takes its next token
            chosen.append(engine.fork(beams[row]) if row in taken else beams[row])
            taken.add(row)
        for row, beam in enumerate(beams):
            if row not in taken:
                engine.remove(beam)
        for beam, tok in zip(chosen, toks):
            engine.append(beam, tok)
        beams, scores = chosen, torch.tensor(kept, device=engine.device)
    live = [Beam(b.new_tokens, float(scores[i]), rank(float(scores[i]), len(b.new_tokens)))
            for i, b in enumerate(beams)]
    # once num_beams beams have ended, the unfinished ones are not candidates (they stopped mid-way)
    best = sorted(finished if len(finished) >= num_beams else finished + live, key=lambda b: b.score, reverse=True)
    return best[:num_beams]


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
    end-of-text token (eos_ids, not printed). kwargs: the sampling settings of generate_tokens (penalties and
    compile included). The text layer is `text_pieces`."""
    tokens = (int(t[0]) for t in generate_tokens(model, tokenizer.encode(prompt), max_new_tokens, eos_ids=eos_ids,
                                                 **kwargs))
    yield from text_pieces(tokenizer, tokens, stop, eos_ids)


def generate_texts(model: LanguageModel, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, num_samples: int,
                   stop: Sequence[str] = (), eos_ids: Sequence[int] = (), seed: int | None = None,
                   **kwargs) -> list[str]:
    """num_samples texts from one prompt, generated together as one batch: sample i is the text generate_text
    gives with seed + i (so the first is the one generated alone with `seed`). kwargs: generate_tokens'."""
    ids = tokenizer.encode(prompt)
    streams = [TextStream(tokenizer, stop, eos_ids) for _ in range(num_samples)]
    texts = [[] for _ in range(num_samples)]
    for step in generate_tokens(model, [ids] * num_samples, max_new_tokens, eos_ids=eos_ids, seed=seed, **kwargs):
        for stream, text, t in zip(streams, texts, step.tolist()):
            if not stream.ended:
                text.append(stream.push(t))
    for stream, text in zip(streams, texts):
        text.append(stream.finish())
    return ["".join(t) for t in texts]


class TextStream:
    """The text layer, fed one token at a time: `push(token)` returns the text that token releases (maybe ""),
    `finish()` the rest once the tokens run out; `ended` is set by an end-of-text token or a stop string, after
    which nothing more comes. text_pieces drives it from an iterator; the server feeds it as tokens come.

    Text is cut before the first stop string, and never shows any part of one: text that could be the
    beginning of a stop string is held back until it is clear it is not one; so is a trailing U+FFFD,
    possibly half of a multi-byte character from a byte-level tokenizer. An end-of-text id (eos_ids) is not
    text: it releases what was held back and ends the stream.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), eos_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.eos = {int(i) for i in eos_ids}
        self.new: list[int] = []
        self.emitted = 0  # characters of the decoded new text already released
        self.ended = False

    def push(self, token: int) -> str:
        if self.ended:
            return ""
        if int(token) in self.eos:
            return self.finish()
        self.new.append(int(token))
        text = self.tokenizer.decode(self.new)
        hits = [text.find(s, max(0, self.emitted - len(s))) for s in self.stop]
        hits = [h for h in hits if h >= 0]
        if hits:
            self.ended = True
            cut = min(hits)
            return text[self.emitted:cut] if cut > self.emitted else ""
        safe = len(text)
        if text.endswith("\N{REPLACEMENT CHARACTER}"):
            safe -= 1  # possibly half of a multi-byte character (byte-level tokenizers): wait for the rest
        for s in self.stop:  # hold back a suffix that is a proper prefix of a stop string
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    safe = min(safe, len(text) - n)
                    break
        if safe <= self.emitted:
            return ""
        piece, self.emitted = text[self.emitted:safe], safe
        return piece

    def finish(self) -> str:
        """What is still held back, once no more tokens come (nothing after a stop string)."""
        if self.ended:
            return ""
        self.ended = True
        text = self.tokenizer.decode(self.new)
        return text[self.emitted:]


def text_pieces(tokenizer: Tokenizer, tokens: Iterable[int], stop: Sequence[str] = (),
                eos_ids: Sequence[int] = ()) -> Iterator[str]:
    """The text layer (TextStream) over an iterator: new token ids in, one at a time, text pieces out, stopping
    before the first stop string or at an end-of-text token (eos_ids, not printed). It pulls a token only when
    it needs one, so whoever feeds it knows which tokens a piece came from."""
    stream = TextStream(tokenizer, stop, eos_ids)
    for tok in tokens:
        piece = stream.push(tok)
        if piece:
            yield piece
        if stream.ended:
            return
    tail = stream.finish()
    if tail:
        yield tail


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


__all__ = ["generate_tokens", "generate", "greedy_batch", "Beam", "beam_search", "END_OF_TEXT", "end_of_text_id",
           "generate_text", "generate_texts", "TextStream", "text_pieces", "beam_search_text"]
