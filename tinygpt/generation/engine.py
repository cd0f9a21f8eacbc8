"""The batched generation engine: many rows of different lengths, one forward pass per step. Token ids only.

Rows join and leave between steps. Each row has its own prompt, its own sampling settings (`Sampling`), its
own seeded torch.Generator and its own end ids, and each follows decoder.py's context-window policy on its
own (a prompt keeps its last block_size tokens; a full window slides to keep its last 3/4). Nothing a row
computes depends on the other rows, so a reply is the same whether it was generated alone or in a batch:
greedy, and sampled with a seed (tests check both, with rows of different lengths, rows joining mid-way and
windows sliding). The same tokens, not necessarily the same last bit of every logit: a matrix product over 16
rows may add up its terms in another order than over one, which could only matter on a near-exact tie.

Layout: one `RowKVCache` (models/attention.py), a slot per row, allocated for the whole window once and
written in place; every row sits at its own position, and a mask lets each row's query see only its own keys
up to itself. A worked example, block_size 4, two rows, greedy:

    add "abc" -> slot 0, add "x" -> slot 1
    step 1: both are new: each reads its window into its slot (prefill, one pass per window length)
            slot 0 holds a b c (filled 3), slot 1 holds x (filled 1); each samples a token: "d", "y"
    step 2: one decoding pass for both: slot 0 feeds "d" at position 3, slot 1 feeds "y" at position 1
    step 3: slot 0's window "abcde" would be 5 > 4 tokens: it slides to its last 3, "cde", and is prefilled
            again (positions 0..2), while slot 1 decodes as before; a row added now takes a free slot and is
            prefilled in this same step

A step is three phases: `logits(rows)` (prefill the rows new to the cache, grouped by window length; then one
decoding pass for every other row), `choose` (each row's logits through its penalties, temperature, top-k,
top-p and its own generator; greedy rows take one argmax together), and `append` (add each row's token, mark
its end, slide its window). `step` runs the three. Newcomers are prefilled in the same step as the others
decode, so the others wait at most one prefill of at most one window per step (a newcomer's prompt is cut to
the window; splitting it over several steps, "chunked prefill", is not done).

`use_cache=False`, or a model without the engine's cache (`can_cache_rows`), recomputes every row's whole window
at every step: the slow, obvious reference path (rows with windows of one length share a pass). The `Decoder`
(decoder.py) stays beside the engine as the older reference; tests check the three agree token for token.

Eager decoding reads only the slots up to the highest in use and the keys up to the furthest position any row
has reached. Compiling (`compile=True`): the decoding pass then reads every slot and the whole window, the same
shapes at every step, so torch.compile captures it once per model and number of slots (inductor on CPU; CUDA
graphs, mode "reduce-overhead", on CUDA). Prefill stays eager. Compiling costs tens of seconds on a CPU, paid
once per model and batch shape in a process, and reading the whole window costs more than eager decoding
reads while the rows are short: ask for it only for long generations (`worth_compiling`: at least
COMPILE_MIN_TOKENS tokens), never for a 20-token sample, and measure that it pays on the hardware at hand.

On a CPU, eager decoding of up to 16 rows runs the model's linear layers through models/matvec.py's kernel,
which reads the weights at close to the machine's memory bandwidth where PyTorch's products for a few rows do
not: for models with enough weights to gain (16 MB or more), where it is measured faster, once per model and
number of rows (`matvec=None`); `matvec=True` always, `matvec=False` never (PyTorch's products). Tests check
both give the same tokens.
"""
from __future__ import annotations

import heapq
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from tinygpt.generation.decoder import prompt_start, slide
from tinygpt.generation.sampling import check_settings, filter_logits, penalize, penalized, sample_next
from tinygpt.models.attention import RowKVCache
from tinygpt.models.attention_kernels import cached_attention_kernels
from tinygpt.models.base import LanguageModel
from tinygpt.models.matvec import MAX_ROWS, decoding_with_matvec, kernels, worth_using

COMPILE_MIN_TOKENS = 256  # a rule of thumb: fewer tokens than this cannot win back tens of seconds of compiling


def worth_compiling(tokens: int) -> bool:
    """Whether compiling the decoding step pays for a generation of `tokens` tokens (the rule the callers that
    choose for the user follow): compiling takes seconds and saves milliseconds a token at best."""
    return tokens >= COMPILE_MIN_TOKENS


@dataclass(frozen=True)
class Sampling:
    """One row's sampling settings (sampling.py says what each does). temperature 0 is greedy."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self):
        check_settings(self.temperature, self.top_k, self.top_p, self.repetition_penalty, self.frequency_penalty,
                       self.presence_penalty)

    @property
    def penalized(self) -> bool:
        return penalized(self.repetition_penalty, self.frequency_penalty, self.presence_penalty)


GREEDY = Sampling(temperature=0.0)


class Row:
    """One sequence being extended: its tokens, its window, its slot in the cache, its settings."""

    def __init__(self, tokens: list[int], sampling: Sampling, generator: torch.Generator | None,
                 eos_ids: frozenset[int], block_size: int):
        self.tokens = tokens  # every token so far, prompt included (what repetition_penalty reads)
        self.prompt_len = len(tokens)
        self.sampling, self.generator, self.eos_ids = sampling, generator, eos_ids
        self.start = prompt_start(len(tokens), block_size)  # the window is tokens[start:]
        self.slot: int | None = None  # its slot in the engine's RowKVCache (cached engines only)
        self.filled = 0  # how many of the window's tokens its slot holds; 0: it must be prefilled
        self.logits: torch.Tensor | None = None  # (V,) raw logits of its next token, once computed
        self.drawn_from: torch.Tensor | None = None  # (V,) the raw logits its newest token was chosen from
        self.finished = False  # it produced one of eos_ids

    @property
    def new_tokens(self) -> list[int]:
        return self.tokens[self.prompt_len:]

    @property
    def n_new(self) -> int:
        """len(new_tokens), without the copy."""
        return len(self.tokens) - self.prompt_len

    @property
    def window(self) -> tuple[int, int]:
        """The (start, end) slice of tokens the model reads for the next token."""
        return self.start, len(self.tokens)


def _forward_rows(model: LanguageModel, idx: torch.Tensor, cache: RowKVCache) -> torch.Tensor:
    """The decoding pass: (slots, V) logits of one token per slot (what torch.compile captures)."""
    logits, _ = model(idx, cache=cache)
    return logits[:, -1, :]


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its compiled decoding pass


def compiled_decoding(model: LanguageModel) -> Callable[[LanguageModel, torch.Tensor, RowKVCache], torch.Tensor]:
    """The model's decoding pass through torch.compile, made once per model (each new number of slots compiles
    once more): CUDA graphs on CUDA, inductor elsewhere."""
    fn = _COMPILED.get(model)
    if fn is None:
        cuda = next(model.parameters()).device.type == "cuda"
        fn = _COMPILED[model] = torch.compile(_forward_rows, mode="reduce-overhead" if cuda else None, dynamic=False)
    return fn


class Engine:
    """Rows of token ids, extended together one token per step (module docstring).

        engine = Engine(model)
        a = engine.add([1, 2, 3], Sampling(temperature=0))
        b = engine.add([4], Sampling(temperature=0.8), seed=7)
        engine.step()                      # one token each: a.new_tokens, b.new_tokens
        engine.remove(a)                   # a leaves; b goes on, and new rows may join

    slots: the cache's starting number of slots (it doubles when a row finds none free). matvec: decode with
    models/matvec.py's kernel (True), without it (False), or where it is measured faster (None, the default).
    The engine uses it on CPU, for eager (not compiled) decoding passes over at most MAX_ROWS rows.
    """

    def __init__(self, model: LanguageModel, *, use_cache: bool = True, compile: bool = False, slots: int = 0,
                 matvec: bool | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.block_size = model.config.block_size
        self.cached = use_cache and getattr(model, "can_cache_rows", False)  # a stand-in model may not say
        self.compiled = compile and self.cached
        # the decoding kernel (models/matvec.py): None decides by measurement for each number of rows decoded
        self.matvec = matvec if self.cached and not self.compiled and self.device.type == "cpu" else False
        self.rows: list[Row] = []
        self.cache: RowKVCache | None = None
        self._free: list[int] = []  # free slots, a heap: a new row takes the lowest
        if self.cached and slots > 0:
            self._grow(slots)

    # --- rows join and leave -----------------------------------------------------------------------
    def add(self, prompt: Sequence[int] | torch.Tensor, sampling: Sampling = GREEDY, seed: int | None = None,
            eos_ids: Sequence[int] = ()) -> Row:
        """A new row from prompt ids (at least one); it is prefilled at its first step. seed: its own generator's."""
        tokens = [int(t) for t in (prompt.view(-1).tolist() if isinstance(prompt, torch.Tensor) else prompt)]
        if not tokens:
            raise ValueError("the prompt is empty: give at least one token")
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        row = Row(tokens, sampling, generator, frozenset(int(i) for i in eos_ids), self.block_size)
        if self.cached:
            row.slot = self._take_slot()
        self.rows.append(row)
        return row

    def remove(self, row: Row) -> None:
        """Take a row out; its slot is free for the next row to join."""
        self.rows.remove(row)
        if row.slot is not None:
            heapq.heappush(self._free, row.slot)
            row.slot = None

    def fork(self, row: Row) -> Row:
        """A copy of a row in a slot of its own, cache included (a beam that splits)."""
        twin = Row(list(row.tokens), row.sampling, None, row.eos_ids, self.block_size)
        twin.prompt_len, twin.start, twin.filled, twin.logits, twin.finished = (row.prompt_len, row.start, row.filled,
                                                                                row.logits, row.finished)
        twin.drawn_from = row.drawn_from
        if row.generator is not None:
            twin.generator = torch.Generator(device=self.device).set_state(row.generator.get_state())
        if self.cached:
            twin.slot = self._take_slot()
            if row.filled:
                self.cache.copy_slot(row.slot, twin.slot)
        self.rows.append(twin)
        return twin

    def _take_slot(self) -> int:
        if not self._free:
            self._grow(2 * self.cache.slots if self.cache is not None else 1)
        return heapq.heappop(self._free)

    def _grow(self, slots: int) -> None:
        had = self.cache.slots if self.cache is not None else 0
        self.cache = self.model.new_row_cache(slots) if self.cache is None else self.cache.grown(slots)
        if self.compiled and self.device.type == "cuda":  # CUDA graphs may then write the cache in place
            for t in self.cache.k + self.cache.v:
                torch._dynamo.mark_static_address(t)
        for s in range(had, slots):
            heapq.heappush(self._free, s)

    # --- the phases --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, rows: Sequence[Row]) -> torch.Tensor:
        """(len(rows), V) raw logits of each row's next token: rows new to the cache are prefilled, the others
        decode together in one pass (or, uncached, every window is read again)."""
        todo = [r for r in rows if r.logits is None]
        if not self.cached:
            self._recompute(todo)
        else:
            decoding = [r for r in todo if r.filled > 0]
            self._prefill([r for r in todo if r.filled == 0])
            if decoding:
                self._decode(decoding)
        return torch.stack([r.logits for r in rows]) if rows else torch.empty(0)

    def _by_window_length(self, rows: Sequence[Row]) -> dict[int, list[Row]]:
        groups: dict[int, list[Row]] = {}
        for r in rows:
            groups.setdefault(len(r.tokens) - r.start, []).append(r)
        return groups

    def _recompute(self, rows: Sequence[Row]) -> None:
        """The uncached reference: read each whole window again (rows with windows of one length together)."""
        for group in self._by_window_length(rows).values():
            idx = torch.tensor([r.tokens[r.start:] for r in group], device=self.device)
            logits, _ = self.model(idx)
            for r, row_logits in zip(group, logits[:, -1, :]):
                r.logits = row_logits

    def _prefill(self, rows: Sequence[Row]) -> None:
        """Read each row's window into a fresh KVCache (rows with windows of one length share one pass, as the
        Decoder's prefill), then copy it into the rows' slots."""
        for length, group in self._by_window_length(rows).items():
            idx = torch.tensor([r.tokens[r.start:] for r in group], device=self.device)  # (g, length)
            fresh = self.model.new_cache(len(group), max_len=length)
            logits, _ = self.model(idx, cache=fresh)
            self.cache.store(torch.tensor([r.slot for r in group], device=self.device), fresh)
            for r, row_logits in zip(group, logits[:, -1, :]):
                r.logits, r.filled = row_logits, length

    def _decode(self, rows: Sequence[Row]) -> None:
        """One pass for every row: each feeds its newest token at its own position. Eager, over the slots up to
        the highest in use; compiled, over all of them (one shape, one graph)."""
        n = self.cache.slots if self.compiled else max(r.slot for r in rows) + 1
        cache = self.cache if n == self.cache.slots else self.cache.first(n)
        write_at = [self.block_size] * n  # slots that sit this step out write to the spare position
        last = [0] * n
        for r in rows:
            write_at[r.slot], last[r.slot] = r.filled, r.tokens[-1]
        # eager: read keys only up to the furthest position written (the rest of the window is empty for all)
        keys = None if self.compiled else max(r.filled for r in rows) + 1
        cache.point(torch.tensor(write_at, device=self.device), keys)
        idx = torch.tensor(last, device=self.device)[:, None]  # (n, 1)
        if self.compiled:
            logits = compiled_decoding(self.model)(self.model, idx, cache).clone()  # CUDA graphs reuse their output
        else:
            matvecs = decoding_with_matvec(self.model) if self._matvec_for(n) else nullcontext()
            with cached_attention_kernels(self.device), matvecs:  # the number of keys changes from step to step
                logits = _forward_rows(self.model, idx, cache)
        for r in rows:
            r.logits = logits[r.slot]
            r.filled += 1

    def _matvec_for(self, n: int) -> bool:
        """Whether a decoding pass over n slots runs the linear layers through the decoding kernel."""
        if self.matvec is None:
            return worth_using(self.model, n)
        return self.matvec and n <= MAX_ROWS and kernels() is not None

    def choose(self, rows: Sequence[Row], logits: torch.Tensor) -> list[int]:
        """Each row's next token from its logits (len(rows), V): penalties, then greedy or its own sampling."""
        tokens: list[int | None] = [None] * len(rows)
        plain_greedy = [i for i, r in enumerate(rows) if r.sampling.temperature == 0 and not r.sampling.penalized]
        if plain_greedy:  # one argmax for all of them (lowest id on ties, as sample_next)
            picked = torch.argmax(logits[plain_greedy], dim=-1).tolist()
            for i, t in zip(plain_greedy, picked):
                tokens[i] = t
        alike: dict[Sampling, list[int]] = {}  # sampled rows without penalties, by their settings
        for i, r in enumerate(rows):
            if tokens[i] is not None:
                continue
            s, x = r.sampling, logits[i:i + 1]
            if not s.penalized:
                alike.setdefault(s, []).append(i)
                continue
            x = penalize(x, [r.tokens], [r.new_tokens], s.repetition_penalty, s.frequency_penalty, s.presence_penalty)
            tokens[i] = int(sample_next(x, s.temperature, s.top_k, s.top_p, r.generator))
        for s, members in alike.items():  # sample_next's filtering for all of them at once, row by row the same;
            probs = torch.softmax(filter_logits(logits[members], s.temperature, s.top_k, s.top_p), dim=-1)
            for j, i in enumerate(members):  # then each row draws with its own generator
                tokens[i] = int(torch.multinomial(probs[j:j + 1], num_samples=1, generator=rows[i].generator))
        return tokens

    def append(self, row: Row, token: int) -> None:
        """Add a token to a row; mark it finished on an end id; slide its window when full."""
        row.tokens.append(int(token))
        row.drawn_from, row.logits = row.logits, None
        if token in row.eos_ids:
            row.finished = True
        start = slide(row.start, len(row.tokens), self.block_size)
        if start != row.start:  # the window slid: the row is prefilled again from its new window
            row.start, row.filled = start, 0

    def step(self, rows: Sequence[Row] | None = None) -> list[int]:
        """One token for each of `rows` (default: every row), in one forward pass: its id, also appended."""
        rows = list(self.rows if rows is None else rows)
        if not rows:
            return []
        tokens = self.choose(rows, self.logits(rows))
        for r, t in zip(rows, tokens):
            self.append(r, t)
        return tokens


__all__ = ["COMPILE_MIN_TOKENS", "worth_compiling", "Sampling", "GREEDY", "Row", "Engine", "compiled_decoding"]
