"""OpenAI's answer to a generation, as the server sends it: a completion's (or a chat reply's) Pieces and Finishes
turned into the whole response, or into server-sent events as they come, and any failure into what a client is
told. The shapes themselves are api.py's; the generation is completions.py's `complete`, run as scheduler Jobs.

`Reply` writes completions ("text_completion"); `ChatReply` overrides only the wire shapes for chat
("chat.completion", or "chat.completion.chunk" deltas with the role first, and chat's logprobs).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from tinygpt.serve import api
from tinygpt.serve.api import APIError
from tinygpt.serve.completions import ChatPrompt, Finish, Piece, ServedModel, token_bytes
from tinygpt.serve.scheduler import Job

log = logging.getLogger("tinygpt.serve.app")


class Reply:
    """Turns a completion's Pieces and Finishes into OpenAI's response, whole or as stream chunks. The wire shapes
    are the methods from _logprobs to _usage_chunk; ChatReply gives chat's."""

    headers: dict[str, str] = {}  # sent with the response

    def __init__(self, served: ServedModel, prompt_tokens: int, logprobs: bool):
        self.served, self.prompt_tokens, self.logprobs = served, prompt_tokens, logprobs
        self.id, self.created = api.new_id(), api.now()

    def _text_of(self, i: int) -> str:
        return self.served.subject.tokenizer.decode([i])

    def _logprobs(self, piece: Piece, offset: int) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        return api.completion_logprobs(piece.tokens, self._text_of, offset, piece.text)

    def _choice(self, index: int, text: str, logprobs: dict[str, Any] | None, finish: str) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}

    def _response(self, choices: list[dict[str, Any]], use: dict[str, int]) -> dict[str, Any]:
        return api.completion_response(self.id, self.created, self.served.name, choices, use)

    def _opening(self, index: int) -> list[dict[str, Any]]:
        """Chunks that open choice `index`'s stream (none for a completion)."""
        return []

    def _chunk(self, index: int, text: str, logprobs: dict[str, Any] | None,
               finish: str | None = None) -> dict[str, Any]:
        return api.completion_chunk(self.id, self.created, self.served.name, index, text, logprobs, finish)

    def _usage_chunk(self, use: dict[str, int]) -> dict[str, Any]:
        return api.usage_chunk(self.id, self.created, self.served.name, use)

    def whole(self, results: list[list[Piece | Finish]]) -> dict[str, Any]:
        choices, produced = [], 0
        for index, items in enumerate(results):
            pieces = [p for p in items if isinstance(p, Piece)]
            finish = next(p for p in items if isinstance(p, Finish))
            produced += finish.completion_tokens
            parts, offset = [], 0
            for p in pieces:
                parts.append(self._logprobs(p, offset))
                offset += len(p.text)
            choices.append(self._choice(index, "".join(p.text for p in pieces),
                                        api.merge_logprobs(parts) if self.logprobs else None, finish.reason))
        return self._response(choices, api.usage(self.prompt_tokens, produced))

    async def stream(self, jobs: list[Job], include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: each choice's opening chunks, a chunk per piece of each choice (interleaved as they
        come), a last chunk per choice with its finish_reason, optionally the usage, then [DONE]. Leaving early
        (the client went away) cancels every job."""
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, job: Job) -> None:
            try:
                async for item in job:
                    await merged.put((index, item))
                await merged.put((index, None))
            except Exception as e:  # reported in the stream, then that choice ends
                await merged.put((index, e))

        tasks = [asyncio.ensure_future(pump(i, job)) for i, job in enumerate(jobs)]
        offsets, produced, open_ = [0] * len(jobs), 0, len(jobs)
        try:
            for index in range(len(jobs)):
                for chunk in self._opening(index):
                    yield api.sse(chunk)
            while open_:
                index, item = await merged.get()
                if isinstance(item, Piece):
                    yield api.sse(self._chunk(index, item.text, self._logprobs(item, offsets[index])))
                    offsets[index] += len(item.text)
                elif isinstance(item, Finish):
                    produced += item.completion_tokens
                    yield api.sse(self._chunk(index, "", None, item.reason))
                elif isinstance(item, Exception):
                    yield api.sse(client_error(item).body())
                    open_ -= 1
                else:
                    open_ -= 1
            if include_usage:
                yield api.sse(self._usage_chunk(api.usage(self.prompt_tokens, produced)))
            yield api.sse("[DONE]")
        finally:
            for job in jobs:
                job.cancel()
            for t in tasks:
                t.cancel()


class ChatReply(Reply):
    """The same for a chat reply: "chat.completion" with the text as the assistant's message, or
    "chat.completion.chunk" events with deltas (the role first); logprobs in chat's shape. The response's
    "tinygpt" object (streamed: the first chunk's) says how many of the conversation's oldest messages were
    dropped to fit the window (also the x-tinygpt-dropped-messages header) and the ids the model read (the page
    inspects a reply's tokens with them)."""

    def __init__(self, served: ServedModel, prompt: ChatPrompt, logprobs: bool):
        super().__init__(served, len(prompt.ids), logprobs)
        self.id = api.new_id("chatcmpl")
        self.extra = {"dropped_messages": prompt.dropped, "prompt_ids": prompt.ids}
        self.headers = {"x-tinygpt-dropped-messages": str(prompt.dropped)}

    def _logprobs(self, piece: Piece, offset: int) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        return api.chat_logprobs(piece.tokens, self._text_of,
                                 lambda i: token_bytes(self.served.subject.tokenizer, i))

    def _choice(self, index: int, text: str, logprobs: dict[str, Any] | None, finish: str) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish}

    def _response(self, choices: list[dict[str, Any]], use: dict[str, int]) -> dict[str, Any]:
        return {**api.completion_response(self.id, self.created, self.served.name, choices, use, "chat.completion"),
                "tinygpt": self.extra}

    def _opening(self, index: int) -> list[dict[str, Any]]:
        first = api.chat_chunk(self.id, self.created, self.served.name, index, {"role": "assistant", "content": ""})
        return [{**first, "tinygpt": self.extra} if index == 0 else first]

    def _chunk(self, index: int, text: str, logprobs: dict[str, Any] | None,
               finish: str | None = None) -> dict[str, Any]:
        delta = {} if finish else {"content": text}
        return api.chat_chunk(self.id, self.created, self.served.name, index, delta, logprobs, finish)

    def _usage_chunk(self, use: dict[str, int]) -> dict[str, Any]:
        return api.usage_chunk(self.id, self.created, self.served.name, use, "chat.completion.chunk")


def client_error(e: BaseException) -> APIError:
    """What a client is told about a failure: our one-line refusals as they are, anything else as a 500 with
    the first line of its message (the traceback goes to the server's log)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, ValueError):  # the library's refusals (InterpretError, TokenizerError, ...) are one line
        return APIError(400, str(e).splitlines()[0] if str(e) else type(e).__name__)
    log.error("internal error", exc_info=e)
    first = str(e).splitlines()[0] if str(e) else ""
    return APIError(500, f"internal error: {type(e).__name__}" + (f": {first}" if first else ""))


__all__ = ["Reply", "ChatReply", "client_error"]
