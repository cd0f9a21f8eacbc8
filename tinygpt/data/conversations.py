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
from typing import Any, Sequence

import torch

from tinygpt.config import SettingText
from tinygpt.data.text import IGNORE_INDEX, DataError
from tinygpt.tokenizers import Tokenizer
from tinygpt.tokenizers.chat import ROLES, ChatTokenizer

LOSS_ON = ("assistant", "all")  # what the loss counts: the assistant's replies (the mask), or every token
# What becomes of a conversation longer than the model's window: cut after its last complete exchange that fits
# (one that not even its first exchange fits is left out), left out whole, or refused (nothing is trained).
LONG_CONVERSATIONS = ("cut", "skip", "refuse")


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


def read_conversations(path: str | Path, skip_bad_lines: bool = False) -> tuple[list[Conversation], list[str]]:
    """The conversations of a JSONL file, one per non-blank line. A malformed line stops the reading with its
    line number (nothing is trained on a file that is half bad) unless skip_bad_lines: then it is left out and its
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
            if not skip_bad_lines:
                raise ChatError(SettingText(f"{e} (pass `skip_bad_lines` to leave such lines out)",
                                            "skip_bad_lines")) from None
            skipped.append(str(e))
            continue
        conversations.append(conv)
    if not conversations:
        raise ChatError(f"{path} holds no usable conversation")
    return conversations, skipped


def is_chat_file(spec: str | Path) -> bool:
    """Does `spec` name chat data: a .jsonl file whose first non-blank line has a "messages" list?"""
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


def message_ids(tok: ChatTokenizer, message: Message) -> list[int]:
    """One message as the model reads it: <|role|> content <|end|>."""
    return [tok.role_id(message.role), *tok.encode(message.content), tok.end_id]


def render(tok: ChatTokenizer, messages: Sequence[Message], reply: bool = False) -> tuple[list[int], list[bool]]:
    """A conversation -> (ids, counts): every message is <|role|> content <|end|>; counts[i] is True where
    ids[i] is part of an assistant message's content or its <|end|> (what the loss learns to predict).
    reply=True appends <|assistant|>: the prompt for the model's next reply."""
    ids: list[int] = []
    counts: list[bool] = []
    for m in messages:
        message = message_ids(tok, m)
        ids += message
        counts += [False] + [m.role == "assistant"] * (len(message) - 1)
    if reply:
        ids.append(tok.role_id("assistant"))
        counts.append(False)
    return ids, counts


@dataclass
class WindowFit:
    """How a list of conversations met a window (fit_conversations): how many were longer than it, how many of
    those were cut or left out, and the longest as written (its tokens and its line in the file, 0 if unknown)."""

    total: int
    window: int  # the tokens a conversation may take: block_size + 1 (a row of inputs and its shifted targets)
    too_long: int = 0
    cut: int = 0
    left_out: int = 0
    longest: int = 0
    longest_line: int = 0


def fit_conversations(tok: ChatTokenizer, conversations: Sequence[Conversation], block_size: int,
                      how: str = "cut") -> tuple[list[Conversation], WindowFit]:
    """The conversations as they can be trained in rows of block_size + 1 tokens, and how they met that window.

    Those that fit stay as they are. A longer one, with how="cut", keeps its messages up to the last assistant
    reply that still fits (a system message stays with them): complete exchanges, never half a reply; when not
    even the first reply fits it is left out. how="skip" leaves every longer one out; how="refuse" keeps them
    all (the caller refuses the data when `too_long` is not 0). E.g. with a window of 24 tokens,
    <|user|>hi<|end|><|assistant|>yo<|end|> (10 tokens) followed by an exchange of 20 more keeps the first 10.
    """
    if how not in LONG_CONVERSATIONS:
        raise ChatError(SettingText(f"`long_conversations` must be one of {', '.join(LONG_CONVERSATIONS)}, not "
                                    f"{how!r}", "long_conversations"))
    window = block_size + 1
    fit = WindowFit(len(conversations), window)
    kept: list[Conversation] = []
    for conv in conversations:
        lengths = [len(message_ids(tok, m)) for m in conv.messages]
        if sum(lengths) <= window:
            kept.append(conv)
            continue
        fit.too_long += 1
        if sum(lengths) > fit.longest:
            fit.longest, fit.longest_line = sum(lengths), conv.line
        if how == "refuse":
            kept.append(conv)
            continue
        end, used = 0, 0
        if how == "cut":
            for k, (m, n) in enumerate(zip(conv.messages, lengths)):
                used += n
                if used > window:
                    break
                if m.role == "assistant":
                    end = k + 1
        if end:
            kept.append(Conversation(conv.messages[:end], conv.line))
            fit.cut += 1
        else:
            fit.left_out += 1
    return kept, fit


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
            raise ChatError(SettingText(f"{where} is {len(c_ids)} tokens long, more than the model's window "
                                        f"(block_size {block_size} + 1); shorten it, cut it after its last exchange "
                                        f"that fits (`long_conversations` cut), or train with a longer `block_size`",
                                        "block_size", "long_conversations"))
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
