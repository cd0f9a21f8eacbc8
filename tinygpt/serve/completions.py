"""Completions as the server makes them: the models it serves, a prompt (or a conversation) turned into the ids a
model reads, and one generation as pieces of text, each with the tokens behind it and their log-probabilities.

A served model (`ServedModel`) is a run directory loaded once, and answers as the CLI samples that run: a task
run (the calculator) takes a question, wraps it as the task does ("seven times eight" -> "seven times eight =")
and ends its answer at <eos>; a text run keeps the last block_size tokens of a long prompt and ends at its
tokenizer's end-of-text token; a chat run (its tokenizer has the chat template's tokens) answers a
conversation as `tinygpt chat` does: the history rendered by the template and fitted to the window by dropping
the oldest exchanges, the reply ended at <|end|> (or at the start of another turn, which the model should not
write). Generation is a row of the batched `Engine` (KV cache, sliding window, seeded sampling, penalties)
under the text layer `TextStream` (stop strings, UTF-8 hold-back), so the same settings and seed give exactly
the text `generate_text` gives, whether the server runs the request alone or with others in one batch.

Log-probabilities are the model's own (log-softmax of the raw logits, before temperature, top-k and top-p),
as OpenAI reports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from tinygpt.config import DEFAULT_TEMPERATURE
from tinygpt.data.conversations import ChatError, parse_conversation
from tinygpt.generation.chat import fit_window, reply_budget
from tinygpt.generation.engine import Engine, Row, Sampling
from tinygpt.generation.generate import TextStream, end_of_text_id
from tinygpt.inspect.interpret import window
from tinygpt.inspect.views import Subject, open_run
from tinygpt.inspect.views import prompt_ids as text_prompt_ids
from tinygpt.models.quantize import quantize as quantize_model
from tinygpt.serve.api import APIError
from tinygpt.tokenizers import ByteBPETokenizer, ChatTokenizer, Tokenizer

TEXT_MAX_TOKENS = 16  # OpenAI's default max_tokens for a completion; a task run answers in full instead


@dataclass
class ServedModel:
    """A run loaded to be served, and the name clients use for it (its directory's name)."""
    name: str
    subject: Subject
    created: int  # when its checkpoint was written (seconds since the epoch)

    @property
    def kind(self) -> str:
        """"task" (the calculator), "chat" (fine-tuned on conversations) or "text"."""
        if self.subject.task is not None:
            return "task"
        return "chat" if self.chat else "text"

    @property
    def chat(self) -> bool:
        """Whether the run was trained on conversations: its tokenizer has the chat template's tokens. Only these
        answer /v1/chat/completions."""
        return isinstance(self.subject.tokenizer, ChatTokenizer)

    @property
    def eos_ids(self) -> list[int]:
        tok = self.subject.tokenizer
        if self.subject.task is not None:
            return [self.subject.task.eos_id]
        if isinstance(tok, ChatTokenizer):  # <|end|>, or the start of a turn the model should not write
            return list(tok.special_ids.values())
        eos = end_of_text_id(tok)
        return [] if eos is None else [eos]

    @property
    def default_temperature(self) -> float:
        """Greedy for the calculator and for chat (as `tinygpt chat`: small models answer best greedily); text
        runs sample at `tinygpt sample`'s default."""
        return DEFAULT_TEMPERATURE if self.kind == "text" else 0.0

    @property
    def default_max_tokens(self) -> int:
        """The calculator's whole answer; a chat reply may fill the window (chat_prompt keeps it within what the
        window leaves); a text completion gets OpenAI's 16."""
        if self.kind == "task":
            return self.subject.task.max_answer_len + 1
        return self.subject.model.config.block_size if self.kind == "chat" else TEXT_MAX_TOKENS

    def details(self) -> dict[str, Any]:
        """What the page needs to know about the model (GET /v1/models, under "tinygpt"). A chat run's tokenizer is
        named by its base (character, BPE, ...); the chat tokens come on top."""
        model, cfg, tok = self.subject.model, self.subject.model.config, self.subject.tokenizer
        return {"kind": self.kind, "chat": self.chat, "model": model.name,
                "tokenizer": tok.base.kind if isinstance(tok, ChatTokenizer) else tok.kind,
                "vocab_size": cfg.vocab_size, "block_size": cfg.block_size, "n_layer": model.attention_layers,
                "n_head": model.attention_heads, "checkpoint": Path(self.subject.cfg["path"]).name,
                "step": self.subject.cfg.get("step"), "default_temperature": self.default_temperature,
                "default_max_tokens": self.default_max_tokens,
                "example": "seven times eight" if self.kind == "task" else None}


def run_name(path: str | Path) -> str:
    """The name a run is served under: its directory's name (runs/calculator -> "calculator"); a checkpoint
    directory given directly (runs/calculator/best) is named after its run."""
    p = Path(path).resolve()
    return p.parent.name if p.name in ("best", "latest") and p.parent.name else p.name


def load_models(paths: Sequence[str | Path], which: str = "best", device: str = "cpu",
                quantize: str | None = None) -> dict[str, ServedModel]:
    """Load every run directory once, as a model served under its name, its weights quantized as `quantize`
    says (models/quantize.py: "int8", "bf16" or None). Two runs with the same name are refused (clients could
    not tell them apart)."""
    models: dict[str, ServedModel] = {}
    for path in paths:
        name = run_name(path)
        if name in models:
            raise ValueError(f"two runs are named {name!r} ({models[name].subject.cfg['path']} and {path}); "
                             f"serve runs whose directories have different names")
        subject = open_run(path, which, device)
        quantize_model(subject.model, quantize, inplace=True)
        created = int((Path(subject.cfg["path"]) / "config.json").stat().st_mtime)
        models[name] = ServedModel(name, subject, created)
    if not models:
        raise ValueError("give at least one run directory to serve")
    return models


def prompt_ids(served: ServedModel, prompt: str | list[int]) -> list[int]:
    """The ids the model reads for a prompt: text is tokenized as `tinygpt inspect` does (a task run wraps its
    question; a text run keeps its last block_size tokens); ids given directly are checked and kept as they
    are (the last block_size of them). APIError 400 for what the model cannot read."""
    if isinstance(prompt, str):
        try:
            ids, _ = text_prompt_ids(served.subject, prompt)
        except ValueError as e:  # the calculator's QuestionError, an empty prompt, a tokenizer's refusal
            raise APIError(400, str(e), param="prompt") from None
        return ids
    vocab = served.subject.model.config.vocab_size
    bad = next((i for i in prompt if not 0 <= i < vocab), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is outside the vocabulary of {served.name} (0..{vocab - 1})",
                       param="prompt")
    return window(prompt, served.subject.model.config.block_size)[0]


@dataclass
class ChatPrompt:
    """The ids a chat run reads to answer a conversation, how many of its oldest messages were dropped to fit
    the window, and the reply's budget in tokens."""
    ids: list[int]
    dropped: int
    max_tokens: int


def chat_prompt(served: ServedModel, messages: Sequence[dict[str, str]], max_tokens: int) -> ChatPrompt:
    """The prompt for the assistant's reply to OpenAI-style messages ({"role", "content"}; "developer" is OpenAI's
    newer name for "system"), as `tinygpt chat` builds it: chat.fit_window renders the history and drops the
    oldest exchanges (a leading system message stays) until it and room for the reply fit the window, and the
    reply stops where the window would slide (its start would fall out of view), as ChatSession.reply does.
    APIError 400 for a conversation the template cannot take, one that does not end with the user's message,
    or a last message too long for the window (code "context_length_exceeded", as OpenAI)."""
    renamed = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in messages]
    try:
        conversation = parse_conversation({"messages": renamed}, "messages")
    except ChatError as e:
        raise APIError(400, str(e), param="messages") from None
    last = conversation.messages[-1].role
    if last != "user":
        raise APIError(400, f"the last message must be the user's, not the {last}'s: the model answers a user",
                       param="messages")
    block = served.subject.model.config.block_size
    try:
        ids, dropped = fit_window(served.subject.tokenizer, conversation.messages, block, max_tokens)
    except ChatError as e:
        raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None
    return ChatPrompt(ids, dropped, reply_budget(len(ids), block, max_tokens))


def token_bytes(tok: Tokenizer, i: int) -> bytes:
    """The bytes token i stands for: a byte-level BPE token's own bytes (maybe part of a character), else the
    UTF-8 of its text."""
    base = tok.base if isinstance(tok, ChatTokenizer) else tok
    if isinstance(base, ByteBPETokenizer) and i < base.vocab_size:
        return base.decode_bytes([i])
    return tok.decode([i]).encode("utf-8")


@dataclass
class Piece:
    """Text for the client, and the tokens behind it: (id, logprob, [(candidate id, logprob), ...]) each;
    empty unless logprobs were asked for."""
    text: str
    tokens: list[tuple[int, float, list[tuple[int, float]]]]


@dataclass
class Finish:
    """The end of a generation: why ("stop": end-of-text or a stop string; "length": max_tokens), and how many
    tokens the model produced."""
    reason: str
    completion_tokens: int


class Completion:
    """One generation, as complete() returns it: an iterator of Pieces, then one Finish. Its tokens come from a
    row of an `Engine`: its own (made at the first next(), when it runs alone), or the one the scheduler steps
    for every running generation of the same model (`join`), so that sixteen requests share one forward pass.

    For the scheduler (scheduler.py's batched jobs): `batch_key` (generations with equal keys share an engine),
    `new_batch()` (the engine to share), `join(engine)`, `wants_step` (its row needs a token from the next
    pass), and `advance()`: the next Piece or Finish from the tokens it has, None when it needs another token.
    """

    def __init__(self, served: ServedModel, ids: Sequence[int], max_tokens: int, sampling: dict[str, Any],
                 seed: int | None, stop: Sequence[str], logprobs: int | None):
        self.model, self.tokenizer = served.subject.model, served.subject.tokenizer
        self.ids, self.max_tokens, self.sampling, self.seed = list(ids), max_tokens, sampling, seed
        self.eos_ids = served.eos_ids
        self.stop, self.logprobs = [s for s in stop if s], logprobs
        self.text = TextStream(self.tokenizer, self.stop, self.eos_ids)
        self.engine: Engine | None = None
        self.row: Row | None = None
        self.used = 0  # how many of the row's new tokens the text layer has been given
        self.behind: list[tuple[int, float, list[tuple[int, float]]]] = []  # tokens since the last piece
        self.done = False  # the Finish has been given

    # --- for the scheduler ---------------------------------------------------------------------------
    @property
    def batch_key(self) -> int:
        return id(self.model)

    def new_batch(self) -> Engine:
        return Engine(self.model)

    def join(self, engine: Engine) -> None:
        """Take a row in `engine` (the settings are checked here: a bad one fails this generation only)."""
        self.engine = engine
        self.row = engine.add(self.ids, Sampling(**self.sampling), self.seed, self.eos_ids)

    @property
    def wants_step(self) -> bool:
        """Whether the next forward pass should give this generation a token."""
        return (self.row is not None and not self.done and not self.text.ended and self.used == self.row.n_new
                and self.used < self.max_tokens and not self.row.finished)

    def advance(self) -> Piece | Finish | None:
        """The next Piece (text the tokens so far release) or the Finish; None when another token is needed
        first. Raises StopIteration after the Finish."""
        if self.done:
            raise StopIteration
        row = self.row
        while not self.text.ended and self.used < row.n_new:
            t = row.tokens[row.prompt_len + self.used]
            self.used += 1
            if self.logprobs is not None and t not in self.eos_ids:  # an end-of-text token is not part of the text
                lp = torch.log_softmax(row.drawn_from.float(), dim=-1)  # (V,) it is the row's newest token
                vals, idx = lp.topk(min(self.logprobs, lp.numel()))
                self.behind.append((t, float(lp[t]), [(int(i), float(v)) for i, v in zip(idx, vals)]))
            piece = self.text.push(t)
            if piece:
                return self._piece(piece)
        if not self.text.ended and self.used < self.max_tokens and not row.finished:
            return None  # the text needs another token
        tail = self.text.finish()
        if tail:
            return self._piece(tail)
        self.done = True
        produced = row.new_tokens[:self.used]
        ended = bool(produced) and produced[-1] in self.eos_ids
        stopped = bool(self.stop) and any(s in self.tokenizer.decode([t for t in produced if t not in self.eos_ids])
                                          for s in self.stop)
        return Finish("stop" if ended or stopped else "length", len(produced))

    def _piece(self, text: str) -> Piece:
        piece = Piece(text, list(self.behind))
        self.behind.clear()
        return piece

    # --- as an iterator (alone) -----------------------------------------------------------------------
    def __iter__(self) -> Completion:
        return self

    def __next__(self) -> Piece | Finish:
        if self.row is None:
            self.join(self.new_batch())
        while True:
            item = self.advance()
            if item is not None:
                return item
            self.engine.step([self.row])

    def close(self) -> None:
        """Leave the engine (the scheduler calls this when the generation ends or its client goes away)."""
        if self.row is not None and self.row in self.engine.rows:
            self.engine.remove(self.row)


def complete(served: ServedModel, ids: Sequence[int], max_tokens: int, temperature: float, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, stop: Sequence[str] = (),
             logprobs: int | None = None, repetition_penalty: float = 1.0, frequency_penalty: float = 0.0,
             presence_penalty: float = 0.0) -> Completion:
    """Generate from ids: an iterator of Pieces as the text layer releases them, then one Finish. Each `next()`
    is a short step (one token, or a few when text is held back), which is what the scheduler interleaves;
    the scheduler runs every generation of one model in one forward pass (Completion).

    logprobs: None for none; k >= 0 for the chosen token's log-probability and the k most likely candidates.
    The penalties (sampling.py) change which token is chosen, not the log-probabilities reported.
    """
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                    frequency_penalty=frequency_penalty, presence_penalty=presence_penalty)
    return Completion(served, ids, max_tokens, sampling, seed, stop, logprobs)


__all__ = ["TEXT_MAX_TOKENS", "ServedModel", "run_name", "load_models", "prompt_ids", "ChatPrompt", "chat_prompt",
           "token_bytes", "Piece", "Finish", "Completion", "complete"]
