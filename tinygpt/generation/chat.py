"""A conversation with a chat model: the history kept within the window, streamed replies, and exact-match
scoring of the assistant's replies.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch.nn as nn

from tinygpt.config import SettingText
from tinygpt.data.conversations import ChatError, Conversation, Message, render
from tinygpt.generation.generate import generate, generate_tokens, greedy_batch, text_pieces
from tinygpt.models import eval_mode
from tinygpt.tokenizers import Tokenizer
from tinygpt.tokenizers.chat import ChatTokenizer


def reply_turns(conversations: Sequence[Conversation]) -> list[tuple[Conversation, int]]:
    """Every (conversation, index of an assistant message) pair: each is one question to score."""
    return [(c, k) for c in conversations for k, m in enumerate(c.messages) if m.role == "assistant"]


def answer_turns(model: nn.Module, tok: ChatTokenizer, turns: Sequence[tuple[Conversation, int]],
                 slow: bool = False) -> list[str | None]:
    """The model's greedy reply to each (conversation, k): given messages[:k], what does it say as the assistant?
    The reply's text, or None when it did not end its reply with <|end|> in time (as long as the expected reply
    and one more token) or the history alone fills the window. The turns run together on the batched engine
    (greedy_batch; histories of any lengths share a batch); slow=True answers one turn at a time through
    generate(), the reference for the batched path."""
    block = model.config.block_size
    prompts = [render(tok, conv.messages[:k], reply=True)[0] for conv, k in turns]
    longest = max((len(tok.encode(conv.messages[k].content)) for conv, k in turns), default=0) + 2

    def budget(n: int) -> int:
        return max(1, min(longest, block - n + 1))

    fits = [i for i, p in enumerate(prompts) if len(p) < block]
    with eval_mode(model):
        if slow:
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
        alone = len(render(tok, turns, reply=True)[0])  # this message without the system message
        if head and alone + 1 <= block_size:  # the system message took the room: say so, and what fits
            fits = block_size - alone - 3  # its text's tokens that leave room (<|system|> and <|end|> take 2)
            raise ChatError(f"the system message leaves no room for this message: it is {len(ids) - alone} tokens "
                            f"(with the template's), the model reads at most {block_size}, and this message needs "
                            f"{alone + 1} (with the template's and the reply's first); " + (
                                f"shorten the system message to at most {fits} tokens, or leave it out" if fits > 0
                                else "leave the system message out"))
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
            raise ChatError(SettingText("this model has no chat template (it is a base model that continues text); "
                                        "fine-tune it into a chat model: train from its weights (`init_from`) on "
                                        "conversations (`data` conversations.jsonl)", "init_from", "data"))
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
              seed: int | None = None, repetition_penalty: float = 1.0, frequency_penalty: float = 0.0,
              presence_penalty: float = 0.0) -> Iterator[str]:
        """Stream the reply to `user`; the history is updated once the reply is complete."""
        ids = self.prompt(user)
        block = self.model.config.block_size
        n = reply_budget(len(ids), block, self.max_new_tokens)
        ends = list(self.tokenizer.special_ids.values())  # <|end|>, or a turn the model should not write
        tokens = (int(t[0]) for t in generate_tokens(self.model, ids, n, temperature, top_k, top_p, seed, eos_ids=ends,
                                                     repetition_penalty=repetition_penalty,
                                                     frequency_penalty=frequency_penalty,
                                                     presence_penalty=presence_penalty))
        text = []
        with eval_mode(self.model):
            for piece in text_pieces(self.tokenizer, tokens, eos_ids=ends):
                text.append(piece)
                yield piece
        self.history += [Message("user", user), Message("assistant", "".join(text))]
