"""Tasks the code generates itself: examples, the loss mask and exact-match scoring (the calculator).

A task is a `BatchSource` (see data/text.py) that also knows how to ask a model its questions and mark the
answers. The calculator learns English arithmetic, one problem per block:

    seven times eight = fifty six <eos> <pad> <pad>

Only the answer words and `<eos>` count in the loss; the question is context. Some plus/minus problems
are held out of training, so their accuracy measures generalisation; the times table is memorised.
"""
from __future__ import annotations

import dataclasses
import operator
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from tinygpt.data.text import IGNORE_INDEX
from tinygpt.generation.generate import beam_search, generate, greedy_batch
from tinygpt.tokenizers import WordTokenizer

# --- English number words ------------------------------------------------------------------------

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
MAX_NUMBER = 999  # the largest number the words below can say
_NUMBERS_WORDS = ONES + TENS + ["hundred"]


def number_to_words(n: int) -> str:
    """0..999 in English words, without "and": number_to_words(198) == "one hundred ninety eight"."""
    if not isinstance(n, int) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_to_words takes a whole number from 0 to {MAX_NUMBER}, got {n!r}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))


# Every canonical spelling, so the inverse is a lookup that accepts exactly what number_to_words writes.
_NUMBERS = {number_to_words(i): i for i in range(MAX_NUMBER + 1)}


def words_to_number(text: str) -> int:
    """The inverse of number_to_words: words_to_number("fifty six") == 56. Whitespace is normalised;
    anything else that number_to_words would not write ("six fifty", "one hundred and six") is refused."""
    key = " ".join(text.split())
    if key not in _NUMBERS:
        raise ValueError(f"{key!r} is not a number in words from zero to {number_to_words(MAX_NUMBER)}")
    return _NUMBERS[key]


# --- the calculator ------------------------------------------------------------------------------

OPS: dict[str, Callable[[int, int], int]] = {"plus": operator.add, "minus": operator.sub, "times": operator.mul}
PAD, SEP, EOS = "<pad>", "=", "<eos>"


class TaskError(ValueError):
    """An invalid task setting; the message is one line, fit for the CLI."""


class QuestionError(TaskError):
    """A question the calculator refuses (it never guesses); the message is one line."""


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return OPS[self.op](self.a, self.b)

    @property
    def question(self) -> str:
        return f"{number_to_words(self.a)} {self.op} {number_to_words(self.b)}"


@dataclass
class CalculatorConfig:
    """The calculator's settings (stored in every checkpoint's config.json under "task").

    ranges: operation -> (lowest, highest) operand; minus keeps only non-negative results.
    mix: training draws an operation with these relative weights, then one of its problems uniformly,
      so the times table (169 problems) gets as many draws as plus (9,000); drawn uniformly over all
      problems, times is seen too rarely to be learned. Less weight on times also slowed plus and minus,
      more slowed them a little: 1:1:1 is the default.
    heldout_ops: the operations that lend `heldout_fraction` of their problems to the held-out ("val")
      split; the others are learned by heart (all of them in training).
    """

    ranges: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"plus": (0, 99), "minus": (0, 99), "times": (0, 12)})
    mix: dict[str, float] = field(default_factory=lambda: {"plus": 1.0, "minus": 1.0, "times": 1.0})
    heldout_ops: tuple[str, ...] = ("plus", "minus")
    heldout_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            self.ranges = {str(op): (int(r[0]), int(r[1])) for op, r in dict(self.ranges).items()}
            self.mix = {str(op): float(w) for op, w in dict(self.mix).items()}
        except (TypeError, ValueError, IndexError, KeyError):
            raise TaskError("ranges must map operations to (lowest, highest) and mix to weights") from None
        self.heldout_ops = tuple(self.heldout_ops)
        if not self.ranges:
            raise TaskError("the calculator needs at least one operation in ranges")
        for op, (lo, hi) in self.ranges.items():
            if op not in OPS:
                raise TaskError(f"unknown operation {op!r} (known: {', '.join(OPS)})")
            if not 0 <= lo <= hi:
                raise TaskError(f"the {op} range must satisfy 0 <= lowest <= highest, got ({lo}, {hi})")
            top = max(OPS[op](hi, hi), OPS[op](hi, lo), hi)
            if top > MAX_NUMBER:
                raise TaskError(f"{op} with operands up to {hi} gives {top}, beyond {MAX_NUMBER}, the largest "
                                f"number the vocabulary can say")
        for op in list(self.mix) + list(self.heldout_ops):
            if op not in self.ranges:
                raise TaskError(f"{op!r} appears in mix or heldout_ops but not in ranges")
        for op in self.ranges:
            if self.mix.get(op, 0.0) <= 0:
                raise TaskError(f"mix must give {op} a weight > 0 (got {self.mix.get(op)})")
        if not self.heldout_ops:
            raise TaskError("heldout_ops must name at least one operation (the val split)")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise TaskError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


def calculator_tokenizer() -> WordTokenizer:
    """The calculator's fixed vocabulary: 3 specials + 29 number words + 3 operations = 35 entries."""
    return WordTokenizer(_NUMBERS_WORDS + list(OPS), specials=[PAD, SEP, EOS])


class CalculatorTask:
    """English arithmetic as a `BatchSource`, with scoring. Settings: CalculatorConfig fields.

    >>> task = CalculatorTask(seed=1)
    >>> task.tokenizer.decode(task.encode(Problem(7, "times", 8)))
    'seven times eight = fifty six <eos>'
    """

    name = "calculator"

    def __init__(self, config: CalculatorConfig | None = None, **settings: Any):
        if config is not None and settings:
            raise TaskError("give either a CalculatorConfig or settings, not both")
        self.config = config if config is not None else CalculatorConfig(**settings)
        cfg = self.config
        self.tokenizer = calculator_tokenizer()
        self.pad_id, self.sep_id, self.eos_id = (self.tokenizer.stoi[s] for s in (PAD, SEP, EOS))
        self.problems = {op: enumerate_problems(op, *cfg.ranges[op]) for op in cfg.ranges}
        self.splits = split_problems(self.problems, cfg.heldout_ops, cfg.heldout_fraction, cfg.seed)
        if not any(self.splits["val"].values()):
            raise TaskError("no problem is held out: raise heldout_fraction or widen the ranges")

        # one padded row per problem: x = row[:-1], y = row[1:] with everything but the answer masked
        rows = [p for ps in self.problems.values() for p in ps]
        self._row_of = {p: i for i, p in enumerate(rows)}
        encoded = [self.encode(p) for p in rows]
        self.seq_len = max(len(e) for e in encoded)
        self.block_size = self.seq_len - 1  # the model never has to read the final <eos>
        self.max_answer_len = max(len(self.number_ids(p.answer)) for p in rows)
        seqs = torch.full((len(rows), self.seq_len), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), self.block_size), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(encoded):
            seqs[i, :len(e)] = torch.tensor(e)
            start = e.index(self.sep_id)  # y[t] predicts seq[t + 1]: the answer is seq[start + 1 : len(e)]
            y[i, start:len(e) - 1] = seqs[i, start + 1:len(e)]
        self._x, self._y = seqs[:, :-1].contiguous(), y

        # sampling tables per split: rows grouped by operation, their starts and sizes, the op weights
        self._tables = {}
        for split, by_op in self.splits.items():
            ops = [op for op in by_op if by_op[op]]
            sizes = torch.tensor([len(by_op[op]) for op in ops])
            starts = torch.cumsum(sizes, 0) - sizes
            ids = torch.tensor([self._row_of[p] for op in ops for p in by_op[op]], dtype=torch.long)
            weights = torch.tensor([cfg.mix[op] for op in ops], dtype=torch.float)
            self._tables[split] = (weights, starts, sizes, ids)

    # --- examples --------------------------------------------------------------------------------
    def number_ids(self, n: int) -> list[int]:
        return self.tokenizer.encode(number_to_words(n))

    def encode(self, p: Problem) -> list[int]:
        """question = answer <eos> as ids (unpadded)."""
        return self.question_ids(p) + self.number_ids(p.answer) + [self.eos_id]

    def question_ids(self, p: Problem) -> list[int]:
        """The prompt for a problem: its question followed by "="."""
        return self.tokenizer.encode(f"{p.question} {SEP}")

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: (B, block_size) int64. An operation is drawn with the `mix` weights, then one of its problems
        of `split` ("train" or "val" = held-out) uniformly. y is IGNORE_INDEX except on answer + <eos>."""
        if split not in self._tables:
            raise ValueError(f"unknown split {split!r} (the calculator has 'train' and 'val')")
        weights, starts, sizes, ids = self._tables[split]
        op = torch.multinomial(weights, batch_size, replacement=True, generator=generator)  # (B,)
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        pick = torch.minimum((u * sizes[op]).long(), sizes[op] - 1)
        rows = ids[starts[op] + pick]
        return self._x[rows], self._y[rows]

    # --- questions and answers ----------------------------------------------------------------------
    def parse_question(self, question: str) -> Problem:
        """"two plus three" (an optional trailing "=" is allowed) -> Problem(2, "plus", 3), or QuestionError."""
        shown = repr(question if len(question) <= 60 else question[:60] + "...")
        words = question.lower().split()
        if words and words[-1] == SEP:
            words = words[:-1]
        if not words:
            raise QuestionError("the question is empty; ask e.g. 'two plus three'")
        known = set(_NUMBERS_WORDS) | set(OPS)
        for w in words:
            if w not in known:
                hint = " (write numbers in words, e.g. 'fifty six')" if any(c.isdigit() for c in w) else ""
                raise QuestionError(f"unknown word {w[:30]!r} in {shown}{hint}; the calculator knows the number "
                                    f"words zero to ninety and hundred, and {', '.join(self.config.ranges)}")
        at = [i for i, w in enumerate(words) if w in OPS]
        if len(at) != 1 or at[0] in (0, len(words) - 1):
            raise QuestionError(f"{shown} is not of the form '<number> <operation> <number>', e.g. 'two plus three'")
        op = words[at[0]]
        if op not in self.config.ranges:
            raise QuestionError(f"this calculator does not know {op!r} (it knows {', '.join(self.config.ranges)})")
        try:
            a, b = (words_to_number(" ".join(part)) for part in (words[:at[0]], words[at[0] + 1:]))
        except ValueError as e:
            raise QuestionError(f"in {shown}: {e}") from None
        lo, hi = self.config.ranges[op]
        for n in (a, b):
            if not lo <= n <= hi:
                raise QuestionError(f"{op} takes numbers from {number_to_words(lo)} to {number_to_words(hi)} "
                                    f"({lo}-{hi}); {number_to_words(n)} ({n}) is out of range")
        p = Problem(a, op, b)
        if p.answer < 0:
            raise QuestionError(f"{p.question} is below zero; the calculator only answers from zero up")
        return p

    def prompt_ids(self, question: str) -> list[int]:
        """The ids to feed the model for a question typed by a person (validated: see parse_question)."""
        return self.question_ids(self.parse_question(question))

    def answer_text(self, ids: Sequence[int]) -> str:
        """Generated ids -> the answer words, up to (not including) the first <eos>."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer.decode(ids)

    def answer(self, model: nn.Module, question: str, max_new_tokens: int | None = None, *,
               temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, num_beams: int = 1, length_penalty: float = 1.0,
               use_cache: bool = True, repetition_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0) -> str:
        """The model's answer to one question, e.g. answer(model, "two plus three") -> "five". Greedy by default
        (what scoring sees); the sampling settings and penalties, or num_beams > 1 (beams end at <eos>), choose
        otherwise. max_new_tokens: by default the longest answer + 1."""
        ids = self.prompt_ids(question)
        n = self._steps(model, len(ids), None) if max_new_tokens is None else max_new_tokens
        if num_beams > 1:
            tokens = beam_search(model, ids, n, num_beams, length_penalty, eos_ids=[self.eos_id],
                                 use_cache=use_cache)[0].tokens
        else:
            tokens = generate(model, ids, n, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              use_cache=use_cache, eos_ids=[self.eos_id], repetition_penalty=repetition_penalty,
                              frequency_penalty=frequency_penalty, presence_penalty=presence_penalty)
        return self.answer_text(tokens)

    # --- greedy completion: the fast batched path and the slow obvious one -------------------------
    def _steps(self, model: nn.Module, prompt_len: int, max_new_tokens: int | None) -> int:
        n = self.max_answer_len + 1 if max_new_tokens is None else max_new_tokens
        block = model.config.block_size
        if prompt_len > block:
            raise ValueError(f"a prompt of {prompt_len} tokens exceeds the model's block_size {block}")
        return min(n, block - prompt_len + 1)  # the last new token is predicted at position block - 1

    def _cut(self, ids: list[int]) -> list[int]:
        return ids[:ids.index(self.eos_id) + 1] if self.eos_id in ids else ids

    def complete(self, model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                 batch_size: int = 2048) -> list[list[int]]:
        """Greedy continuation of every prompt up to and including its first <eos> (at most max_new_tokens, by
        default the longest answer + 1); prompts of equal length run as one batch (generate.greedy_batch)."""
        return greedy_batch(model, prompts, lambda n: self._steps(model, n, max_new_tokens), [self.eos_id],
                            batch_size)

    def complete_slow(self, model: nn.Module, prompts: Sequence[Sequence[int]],
                      max_new_tokens: int | None = None, **kwargs: Any) -> list[list[int]]:
        """The obvious reference for `complete`: one prompt at a time through generate(temperature=0)."""
        return [self._cut(generate(model, list(p), self._steps(model, len(p), max_new_tokens),
                                   temperature=0, **kwargs)) for p in prompts]

    # --- scoring -------------------------------------------------------------------------------------
    def score(self, model: nn.Module, split: str = "val", *, max_per_op: int | None = None,
              slow: bool = False) -> dict[str, dict[str, float]]:
        """Exact match of greedy answers per operation on the "val" (held-out) or "train" problems:
        {"plus": {"correct": 996, "total": 1000, "accuracy": 0.996}, ...}. max_per_op: score an evenly
        spaced subset of at most that many problems per operation (quicker)."""
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} (the calculator has 'train' and 'val')")
        was_training = model.training
        model.eval()
        try:
            result = {}
            for op, problems in self.splits[split].items():
                if not problems:
                    continue
                if max_per_op is not None and len(problems) > max_per_op:
                    problems = [problems[i * len(problems) // max_per_op] for i in range(max_per_op)]
                prompts = [self.question_ids(p) for p in problems]
                got = (self.complete_slow if slow else self.complete)(model, prompts)
                correct = sum(g == self.number_ids(p.answer) + [self.eos_id] for g, p in zip(got, problems))
                result[op] = {"correct": correct, "total": len(problems), "accuracy": correct / len(problems)}
            return result
        finally:
            model.train(was_training)

    # --- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.config)
        d["ranges"] = {op: list(r) for op, r in d["ranges"].items()}
        d["heldout_ops"] = list(d["heldout_ops"])
        return {"name": self.name, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CalculatorTask":
        known = {f.name for f in dataclasses.fields(CalculatorConfig)}
        unknown = [k for k in d if k not in known and k != "name"]
        if unknown:
            raise TaskError(f"unknown calculator setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(CalculatorConfig(**{k: v for k, v in d.items() if k in known}))

    def __repr__(self) -> str:
        counts = ", ".join(f"{op} {len(ps)}" for op, ps in self.problems.items())
        return f"CalculatorTask({counts}; block_size={self.block_size})"


def enumerate_problems(op: str, lo: int, hi: int) -> list[Problem]:
    """Every problem of an operation with both operands in [lo, hi] and a non-negative answer, in order."""
    return [Problem(a, op, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1) if OPS[op](a, b) >= 0]


def split_problems(problems: dict[str, list[Problem]], heldout_ops: Sequence[str], fraction: float,
                   seed: int) -> dict[str, dict[str, list[Problem]]]:
    """{"train": {op: [...]}, "val": {op: [...]}}: for each op in heldout_ops, round(fraction * n) of its
    problems (chosen by a seeded shuffle) go to "val"; every other problem is in "train". Both keep the
    canonical order. The same seed gives the same split on every machine (random.Random is stable)."""
    rng = random.Random(seed)
    splits: dict[str, dict[str, list[Problem]]] = {"train": {}, "val": {}}
    for op, ps in problems.items():
        held: set[int] = set()
        if op in heldout_ops:
            order = list(range(len(ps)))
            rng.shuffle(order)
            held = set(order[:round(fraction * len(ps))])
        splits["train"][op] = [p for i, p in enumerate(ps) if i not in held]
        splits["val"][op] = [p for i, p in enumerate(ps) if i in held]
    return splits


TASKS: dict[str, type[CalculatorTask]] = {"calculator": CalculatorTask}


def task_from_dict(d: dict[str, Any]) -> CalculatorTask:
    """Rebuild a task from its to_dict() (e.g. a checkpoint's config.json "task" entry)."""
    name = d.get("name")
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})")
    return TASKS[name].from_dict(d)


__all__ = ["CalculatorConfig", "CalculatorTask", "Problem", "QuestionError", "TaskError", "TASKS",
           "calculator_tokenizer", "number_to_words", "task_from_dict", "words_to_number"]
