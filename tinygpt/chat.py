"""Chat: conversations as data, the chat template with its loss mask, packed training blocks, exact-match
scoring of the assistant's replies, and a conversation with a model that keeps its history in the window.

A conversation is a list of messages, each a role ("system", "user", "assistant") and its content, read from
JSONL in the common format, one conversation per line:

    {"messages": [{"role": "user", "content": "what is two plus three?"}, {"role": "assistant", "content": "five."}]}

The template (tokenizers/chat.py has its four special tokens) renders it as

    <|user|>what is two plus three?<|end|><|assistant|>five.<|end|>

and the loss mask keeps only the assistant's words and its <|end|>: the model is taught to answer, not to
predict what users ask. To ask for a reply, the history is rendered and followed by <|assistant|>; the
model writes until it produces <|end|>.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from .data import IGNORE_INDEX, DataError
from .generate import greedy_batch, text_pieces
from .decoder import Decoder
from .models import eval_mode
from .tokenizers import Tokenizer
from .tokenizers.chat import ROLES, ChatTokenizer

LOSS_ON = ("assistant", "all")  # what the loss counts: the assistant's replies (the mask), or every token


class ChatError(DataError):
    """Unusable conversations or a turn that cannot be answered; the message is one line, fit for the CLI."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    line: int = 0  # where it came from in its file (1-based; 0: not from a file)


# --- conversations as data -------------------------------------------------------------------------

def parse_conversation(obj: Any, where: str = "the conversation", line: int = 0) -> Conversation:
    """A JSON object {"messages": [{"role", "content"}, ...]} -> Conversation, or ChatError saying what is wrong
    (`where` names it, e.g. "line 7"). A system message may only come first; at least one message is needed."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise ChatError(f'{where}: expected an object with a "messages" list')
    if not obj["messages"]:
        raise ChatError(f'{where}: "messages" is empty')
    messages = []
    for k, m in enumerate(obj["messages"]):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ChatError(f'{where}: message {k + 1} must be an object with a string "role" and "content"')
        if m["role"] not in ROLES:
            raise ChatError(f"{where}: message {k + 1} has unknown role {m['role'][:30]!r} "
                            f"(known: {', '.join(ROLES)})")
        if m["role"] == "system" and k > 0:
            raise ChatError(f"{where}: a system message may only come first (message {k + 1} is one)")
        messages.append(Message(m["role"], m["content"]))
    return Conversation(tuple(messages), line)


def read_conversations(path: str | Path, skip_bad: bool = False) -> tuple[list[Conversation], list[str]]:
    """The conversations of a JSONL file, one per non-blank line. A malformed line stops the reading with its
    line number (nothing is trained on a file that is half bad) unless skip_bad: then it is left out and its
    error returned in the second list. Conversations without an assistant turn teach nothing: refused too."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ChatError(f"conversation file not found: {path}") from None
    except IsADirectoryError:
        raise ChatError(f"{path} is a folder; give one .jsonl file of conversations") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise ChatError(f"{path} is not valid UTF-8 (bad byte at offset {e.start})") from None
    conversations, skipped = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ChatError(f"{path} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            conv = parse_conversation(obj, f"{path} line {n}", n)
            if not any(m.role == "assistant" for m in conv.messages):
                raise ChatError(f"{path} line {n}: no assistant message, so nothing to learn from")
        except ChatError as e:
            if not skip_bad:
                raise ChatError(f"{e} (pass --skip_bad_lines to leave such lines out)") from None
            skipped.append(str(e))
            continue
        conversations.append(conv)
    if not conversations:
        raise ChatError(f"{path} holds no usable conversation")
    return conversations, skipped


def is_chat_file(spec: str | Path) -> bool:
    """Does --data name chat data: a .jsonl file whose first non-blank line has a "messages" list?"""
    path = Path(spec)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                    return isinstance(first, dict) and "messages" in first
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return True  # a broken first line of a .jsonl file: the chat reader reports it
    return False


def split_conversations(conversations: Sequence[Conversation], val_fraction: float
                        ) -> tuple[list[Conversation], list[Conversation]]:
    """The split rule for conversations, as data.split_text's for text: the first (1 - val_fraction) train,
    the rest are held out (at least one each when there are two or more)."""
    n = len(conversations)
    cut = min(max(int(n * (1 - val_fraction)), 1), n - 1) if n > 1 else n
    return list(conversations[:cut]), list(conversations[cut:])


# --- the template and its mask -----------------------------------------------------------------------

def render(tok: ChatTokenizer, messages: Sequence[Message], reply: bool = False) -> tuple[list[int], list[bool]]:
    """A conversation -> (ids, counts): every message is <|role|> content <|end|>; counts[i] is True where
    ids[i] is part of an assistant message's content or its <|end|> (what the loss learns to predict).
    reply=True appends <|assistant|>: the prompt for the model's next reply."""
    ids: list[int] = []
    counts: list[bool] = []
    for m in messages:
        content = tok.encode(m.content)
        learn = m.role == "assistant"
        ids += [tok.role_id(m.role), *content, tok.end_id]
        counts += [False] + [learn] * (len(content) + 1)
    if reply:
        ids.append(tok.role_id("assistant"))
        counts.append(False)
    return ids, counts


def chat_tokenizer(tok: Tokenizer) -> ChatTokenizer:
    """`tok` itself if it has the chat tokens, else it with them added (its ids unchanged)."""
    return tok if isinstance(tok, ChatTokenizer) else ChatTokenizer(tok)


def pack(tok: ChatTokenizer, conversations: Sequence[Conversation], block_size: int, loss_on: str = "assistant",
         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole conversations, in a seeded shuffled order, packed into rows of block_size + 1 ids (the rest of a row
    is <|end|> padding that counts nothing): (x, y), each (N, block_size), y = IGNORE_INDEX where the target does
    not count. ChatError for a conversation longer than a row."""
    if loss_on not in LOSS_ON:
        raise ChatError(f"loss_on must be one of {', '.join(LOSS_ON)}, not {loss_on!r}")
    T = block_size + 1
    rows: list[tuple[list[int], list[bool]]] = []
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    ids: list[int] = []
    counts: list[bool] = []
    for i in order:
        c_ids, c_counts = render(tok, conversations[i].messages)
        if len(c_ids) > T:
            where = f"the conversation on line {conversations[i].line}" if conversations[i].line else "a conversation"
            raise ChatError(f"{where} is {len(c_ids)} tokens long, more than the model's window "
                            f"(block_size {block_size} + 1); shorten it or train with a longer --block_size")
        if loss_on == "all":
            c_counts = [True] * len(c_ids)
        if len(ids) + len(c_ids) > T:
            rows.append((ids, counts))
            ids, counts = [], []
        ids, counts = ids + c_ids, counts + c_counts
    rows.append((ids, counts))
    block = torch.full((len(rows), T), tok.end_id, dtype=torch.long)
    target = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, counts) in enumerate(rows):
        block[r, :len(ids)] = torch.tensor(ids)
        counted = torch.tensor(counts)
        target[r, :len(ids)][counted] = block[r, :len(ids)][counted]
    return block[:, :-1].contiguous(), target[:, 1:].contiguous()


@torch.no_grad()
def evaluate_chat(model: nn.Module, tok: ChatTokenizer, conversations: Sequence[Conversation],
                  loss_on: str = "assistant", batch_size: int = 32) -> dict[str, Any]:
    """A chat model on some conversations: the exact mean loss over every counted token (each conversation once,
    packed as in training) and the exact match of its greedy replies (score_replies)."""
    x, y = pack(tok, conversations, model.config.block_size, loss_on)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for i in range(0, x.size(0), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            n = int((yb != IGNORE_INDEX).sum())
            if n:
                total += model(xb, yb)[1].item() * n
                count += n
    return {"loss": total / max(count, 1), "tokens": count, "conversations": len(conversations),
            **score_replies(model, tok, conversations)}


class ChatData:
    """Conversations packed into training blocks (a `BatchSource`, see data.py).

    Each conversation is rendered once; whole conversations are packed, in a seeded shuffled order, into rows
    of block_size + 1 ids (the rest of a row is padding that counts nothing). x = row[:-1], y = row[1:] with
    IGNORE_INDEX wherever the target is not counted: outside the assistant's replies when loss_on is
    "assistant" (the mask), only on padding when it is "all". A conversation longer than a row is refused.
    Batches draw rows at random. `metrics(model)` scores greedy replies on held-out conversations.
    """

    def __init__(self, train: Sequence[Conversation], val: Sequence[Conversation], tokenizer: ChatTokenizer,
                 block_size: int, loss_on: str = "assistant", seed: int = 0, score_turns: int = 200):
        if not val:
            raise ChatError("no conversation is held out for evaluation: give at least two conversations")
        self.tokenizer, self.block_size, self.loss_on = tokenizer, block_size, loss_on
        self.conversations = {"train": list(train), "val": list(val)}
        self.score_turns = score_turns
        self._rows = {split: pack(tokenizer, convs, block_size, loss_on, seed)
                      for split, convs in self.conversations.items()}

    def rows(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every packed (x, y) row of a split: (N, block_size) each."""
        if split not in self._rows:
            raise ValueError(f"unknown split {split!r} (chat data has 'train' and 'val')")
        return self._rows[split]

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.rows(split)
        pick = torch.randint(x.size(0), (batch_size,), generator=generator)
        return x[pick], y[pick]

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """Exact match of greedy replies on (an evenly spaced sample of) the held-out assistant turns."""
        scores = score_replies(model, self.tokenizer, self.conversations["val"], self.score_turns)
        return {f"val_exact_{kind}": s["accuracy"] for kind, s in scores.items() if s["total"]}


# --- scoring ---------------------------------------------------------------------------------------

def reply_turns(conversations: Sequence[Conversation]) -> list[tuple[Conversation, int]]:
    """Every (conversation, index of an assistant message) pair: each is one question to score."""
    return [(c, k) for c in conversations for k, m in enumerate(c.messages) if m.role == "assistant"]


def answer_turns(model: nn.Module, tok: ChatTokenizer, turns: Sequence[tuple[Conversation, int]],
                 slow: bool = False) -> list[str | None]:
    """The model's greedy reply to each (conversation, k): given messages[:k], what does it say as the assistant?
    The reply's text, or None when it did not end its reply with <|end|> in time (as long as the expected reply
    and one more token) or the history alone fills the window. slow=True answers one turn at a time through
    generate(), the reference for the batched path."""
    block = model.config.block_size
    prompts = [render(tok, conv.messages[:k], reply=True)[0] for conv, k in turns]
    longest = max((len(tok.encode(conv.messages[k].content)) for conv, k in turns), default=0) + 2

    def budget(n: int) -> int:
        return max(1, min(longest, block - n + 1))

    fits = [i for i, p in enumerate(prompts) if len(p) < block]
    with eval_mode(model):
        if slow:
            from .generate import generate
            got = [generate(model, prompts[i], budget(len(prompts[i])), temperature=0, eos_ids=[tok.end_id])
                   for i in fits]
        else:
            got = greedy_batch(model, [prompts[i] for i in fits], budget, [tok.end_id], batch_size=256)
    out: list[str | None] = [None] * len(turns)
    for i, g in zip(fits, got):
        if g and g[-1] == tok.end_id and all(t < tok.base.vocab_size for t in g[:-1]):
            out[i] = tok.decode(g[:-1])
    return out


def score_replies(model: nn.Module, tok: ChatTokenizer, conversations: Sequence[Conversation],
                  max_turns: int | None = None, slow: bool = False) -> dict[str, dict[str, float]]:
    """Exact match of the model's greedy replies, given each conversation's history up to an assistant turn:
    {"first": {"correct", "total", "accuracy"}, "followup": {...}}; "first" is a conversation's first assistant
    turn, "followup" every later one. max_turns: score an evenly spaced sample of at most that many turns."""
    turns = reply_turns(conversations)
    if max_turns is not None and len(turns) > max_turns:
        turns = [turns[i * len(turns) // max_turns] for i in range(max_turns)]
    got = answer_turns(model, tok, turns, slow)
    out = {kind: {"correct": 0, "total": 0, "accuracy": 0.0} for kind in ("first", "followup")}
    for (conv, k), g in zip(turns, got):
        kind = "followup" if any(m.role == "assistant" for m in conv.messages[:k]) else "first"
        out[kind]["total"] += 1
        out[kind]["correct"] += int(g == conv.messages[k].content)
    for s in out.values():
        s["accuracy"] = s["correct"] / s["total"] if s["total"] else 0.0
    return out


# --- a conversation with a model -------------------------------------------------------------------

def fit_window(tok: ChatTokenizer, messages: Sequence[Message], block_size: int, room: int) -> tuple[list[int], int]:
    """The prompt for the assistant's next reply to `messages`, within the window: (ids, how many messages were
    dropped). While the rendered history and `room` tokens for the reply (at most half the window) do not fit
    in block_size, the oldest exchange goes (a leading system message stays). ChatError when the last message
    alone, with the system message, leaves no room for even one token of reply."""
    head = list(messages[:1]) if messages and messages[0].role == "system" else []
    turns = list(messages[len(head):])
    room = max(1, min(room, block_size // 2))
    dropped = 0
    while True:
        ids, _ = render(tok, head + turns, reply=True)
        if len(ids) + room <= block_size or len(turns) <= 1:
            break
        cut = next((i for i in range(1, len(turns)) if turns[i].role == "user"), len(turns) - 1)
        turns, dropped = turns[cut:], dropped + cut
    if len(ids) + 1 > block_size:
        raise ChatError(f"this message is too long: with the conversation's start it is {len(ids)} tokens, "
                        f"and the model reads at most {block_size}; say it in fewer words")
    return ids, dropped


def reply_budget(prompt_len: int, block_size: int, max_new_tokens: int) -> int:
    """How many tokens a reply may take: max_new_tokens, but never so many that the window would slide (the
    conversation's start must stay in view). reply_budget(20, 24, 100) == 5."""
    return max(1, min(max_new_tokens, block_size - prompt_len + 1))


class ChatSession:
    """A running conversation: the history, and replies that keep it within the model's window.

    reply(text) streams the assistant's answer piece by piece and adds both turns to the history. When the
    history, the new message and room for the reply (max_new_tokens) do not fit in block_size, the oldest
    exchanges are dropped (the system message stays); `dropped` counts the messages dropped by the last reply.
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, system: str | None = None, max_new_tokens: int = 100):
        if not isinstance(tokenizer, ChatTokenizer):
            raise ChatError("this model has no chat template (it is a base model that continues text); "
                            "fine-tune it into a chat model with tinygpt train --init_from RUN --data "
                            "conversations.jsonl")
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.system = Message("system", system) if system else None
        self.history: list[Message] = []
        self.dropped = 0

    def reset(self) -> None:
        self.history, self.dropped = [], 0

    def prompt(self, user: str) -> list[int]:
        """The ids the model reads to answer `user`, after dropping the oldest turns that do not fit."""
        head = [self.system] if self.system else []
        ids, dropped = fit_window(self.tokenizer, head + self.history + [Message("user", user)],
                                  self.model.config.block_size, self.max_new_tokens)
        self.history, self.dropped = self.history[dropped:], dropped
        return ids

    def reply(self, user: str, *, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
              seed: int | None = None) -> Iterator[str]:
        """Stream the reply to `user`; the history is updated once the reply is complete."""
        ids = self.prompt(user)
        block = self.model.config.block_size
        n = reply_budget(len(ids), block, self.max_new_tokens)
        ends = list(self.tokenizer.special_ids.values())  # <|end|>, or a turn the model should not write
        dec = Decoder(self.model, ids, eos_ids=ends)
        tokens = (int(t[0]) for _, t in dec.generate(n, temperature, top_k, top_p, seed))
        text = []
        with eval_mode(self.model):
            for piece in text_pieces(self.tokenizer, tokens, eos_ids=ends):
                text.append(piece)
                yield piece
        self.history += [Message("user", user), Message("assistant", "".join(text))]


__all__ = ["answer_turns", "ChatData", "ChatError", "ChatSession", "Conversation", "LOSS_ON", "Message", "chat_tokenizer", "evaluate_chat", "fit_window", "pack",
           "is_chat_file", "parse_conversation", "read_conversations", "render", "reply_budget", "reply_turns", "score_replies",
           "split_conversations"]
