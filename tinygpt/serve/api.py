"""The OpenAI wire format the server speaks: requests checked into typed ones, responses and stream chunks
built, errors in OpenAI's shape. No web framework, so every rule is testable alone; the sampling rules are
sampling.check_settings', the library's own.

Every refusal is an `APIError`: an HTTP status and a one-line message, sent as
`{"error": {"message", "type", "param", "code"}}`. What is refused: a body that is not a JSON object, NaN
or infinity anywhere in it, unknown fields (as OpenAI does: "unrecognized request argument"), a field of the
wrong type, values out of range (temperature in [0, 2], top_p in (0, 1], max_tokens from 1 to the server's
limit, n from 1 to its limit, logprobs from 0 to MAX_LOGPROBS, frequency_penalty and presence_penalty in
[-2, 2], repetition_penalty > 0), empty prompts and prompts longer than the server's limit, and the options
tinygpt does not implement when they are set to anything but their neutral value (logit_bias, echo, suffix,
best_of).

The penalties are OpenAI's `frequency_penalty` and `presence_penalty` and vLLM's `repetition_penalty` (Hugging
Face's); what each does is sampling.py's docstring.

Sampling fields not given stay None: the server fills in the run's defaults (greedy for a task run).
"""
from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tinygpt.generation.sampling import check_settings

MAX_LOGPROBS = 20  # top candidates per token a client may ask for
MAX_STOP = 4  # stop strings per request, as OpenAI
MAX_SEED = 2 ** 63 - 1
UNLIKELY = -9999.0  # a chat logprob too small for a float, as OpenAI reports it


@dataclass
class Limits:
    """What one request may ask of the server."""
    max_tokens: int = 1024  # new tokens per choice
    max_prompt: int = 16_384  # characters of a text prompt, or tokens of a prompt given as ids
    max_n: int = 8  # choices per request
    max_body: int = 1 << 20  # bytes of a request body

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_prompt", "max_n", "max_body"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class APIError(Exception):
    """A refused request: HTTP status, one-line message, and OpenAI's type / param / code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --- reading a body --------------------------------------------------------------------------------

def _refuse_constant(name: str) -> float:
    raise APIError(400, f"the request body holds {name}, which is not a number JSON allows")


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or APIError 400. NaN and Infinity (which Python's json accepts)
    are refused."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise APIError(400, "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise APIError(400, f"the request body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, not {_kind(body)}")
    return body


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


class Fields:
    """Typed access to a request object: unknown fields are refused at once; each read checks the type and the
    range, and names the field in its refusal."""

    def __init__(self, body: dict[str, Any], known: Sequence[str]):
        unknown = [k for k in body if k not in known]
        if unknown:
            raise APIError(400, f"unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                           code="unknown_parameter")
        self.body = body

    def _bad(self, name: str, want: str) -> APIError:
        return APIError(400, f"{name} must be {want}, got {_kind(self.body[name])}"
                             f"{'' if isinstance(self.body[name], (dict, list)) else ' ' + _short(self.body[name])}",
                        param=name)

    def string(self, name: str, required: bool = False) -> str | None:
        v = self.body.get(name)
        if v is None:
            if required:
                raise APIError(400, f"{name} is required", param=name)
            return None
        if not isinstance(v, str):
            raise self._bad(name, "a string")
        return v

    def boolean(self, name: str, default: bool = False) -> bool:
        v = self.body.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._bad(name, "true or false")
        return v

    def integer(self, name: str, lo: int, hi: int, what: str = "") -> int | None:
        v = self.body.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise self._bad(name, "a whole number")
        v = int(v)
        if not lo <= v <= hi:
            raise APIError(400, f"{name} must be between {lo} and {hi}{what}, got {v}", param=name)
        return v

    def number(self, name: str, lo: float, hi: float, open_low: bool = False) -> float | None:
        v = self.body.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._bad(name, "a number")
        v = float(v)
        if not math.isfinite(v) or v > hi or v < lo or (open_low and v == lo):
            left = "(" if open_low else "["
            raise APIError(400, f"{name} must be in {left}{lo:g}, {hi:g}], got {v:g}", param=name)
        return v

    def neutral(self, name: str, *allowed: Any) -> None:
        """Options tinygpt does not implement: accepted only at their neutral value."""
        v = self.body.get(name)
        if v is not None and v not in allowed:
            raise APIError(400, f"{name} is not supported by this server (leave it out)", param=name,
                           code="unsupported_parameter")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- requests ------------------------------------------------------------------------------------

@dataclass
class Sampling:
    """The sampling fields shared by both endpoints; None: the run's default."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not in OpenAI's API; vLLM and others accept it too
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    repetition_penalty: float = 1.0  # 1, 0 and 0: no penalty
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def penalties(self) -> dict[str, float]:
        """The penalties switched on, as keyword arguments (none: {})."""
        neutral = Sampling()
        return {name: getattr(self, name) for name in PENALTIES if getattr(self, name) != getattr(neutral, name)}


PENALTIES = ("repetition_penalty", "frequency_penalty", "presence_penalty")


@dataclass
class CompletionRequest:
    model: str
    prompt: str | list[int]
    sampling: Sampling
    logprobs: int | None = None  # how many top candidates per token; None: no logprobs


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    sampling: Sampling
    logprobs: bool = False
    top_logprobs: int = 0


_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "stream", "stream_options",
             "logit_bias", "user") + PENALTIES
COMPLETION_FIELDS = ("model", "prompt", "logprobs", "echo", "suffix", "best_of") + _SAMPLING
CHAT_FIELDS = ("model", "messages", "logprobs", "top_logprobs", "max_completion_tokens") + _SAMPLING


def _penalty(f: Fields, name: str, neutral: float) -> float:
    """A penalty field, checked by the library's own rule (sampling.check_settings); neutral when not given."""
    v = f.body.get(name)
    if v is None:
        return neutral
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise f._bad(name, "a number")
    try:
        check_settings(0.0, **{name: float(v)})
    except ValueError as e:
        raise APIError(400, f"{e}, got {float(v):g}", param=name) from None
    return float(v)


def _sampling(f: Fields, limits: Limits, max_tokens: str = "max_tokens") -> Sampling:
    f.neutral("logit_bias", {})
    f.string("user")
    stop = f.body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise f._bad("stop", "a string or an array of strings")
    if len(stops) > MAX_STOP:
        raise APIError(400, f"stop takes at most {MAX_STOP} strings, got {len(stops)}", param="stop")
    if any(s == "" for s in stops):
        raise APIError(400, "stop strings must not be empty", param="stop")
    if any(len(s) > limits.max_prompt for s in stops):
        raise APIError(400, f"a stop string is longer than {limits.max_prompt} characters", param="stop")
    options = f.body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}
                                or not isinstance(options.get("include_usage", False), bool)):
        raise APIError(400, 'stream_options must be {"include_usage": true or false}', param="stream_options")
    stream = f.boolean("stream")
    if options is not None and not stream:
        raise APIError(400, "stream_options needs stream: true", param="stream_options")
    return Sampling(
        max_tokens=f.integer(max_tokens, 1, limits.max_tokens, " (this server's limit)"),
        temperature=f.number("temperature", 0.0, 2.0),
        top_p=f.number("top_p", 0.0, 1.0, open_low=True),
        top_k=f.integer("top_k", 1, 1 << 31),
        seed=f.integer("seed", 0, MAX_SEED),
        stop=stops,
        n=f.integer("n", 1, limits.max_n, " (this server's limit)") or 1,
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        repetition_penalty=_penalty(f, "repetition_penalty", 1.0),
        frequency_penalty=_penalty(f, "frequency_penalty", 0.0),
        presence_penalty=_penalty(f, "presence_penalty", 0.0),
    )


def model_field(f: Fields) -> str:
    name = f.string("model", required=True)
    if not name:
        raise APIError(400, "model must name one of the served runs (see GET /v1/models)", param="model")
    return name


def parse_prompt(value: Any, limits: Limits, name: str = "prompt") -> str | list[int]:
    """A prompt: a string, an array of token ids, or an array holding exactly one of those."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]  # OpenAI's batch form with one prompt
    if isinstance(value, str):
        if value == "":
            raise APIError(400, f"the {name} is empty: give the model some text to read", param=name)
        if len(value) > limits.max_prompt:
            raise APIError(400, f"the {name} has {len(value):,} characters; this server takes at most "
                                f"{limits.max_prompt:,}", param=name, code="prompt_too_long")
        return value
    if isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        if len(value) > limits.max_prompt:
            raise APIError(400, f"the {name} has {len(value):,} tokens; this server takes at most "
                                f"{limits.max_prompt:,}", param=name, code="prompt_too_long")
        return list(value)
    if value is None:
        raise APIError(400, f"{name} is required", param=name)
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, (str, list)) for v in value):
        raise APIError(400, f"{name} must be one prompt; send one request per prompt (n asks for several "
                            f"completions of it)", param=name)
    raise APIError(400, f"{name} must be a string or an array of token ids, got {_kind(value)}", param=name)


def parse_completion(body: dict[str, Any], limits: Limits) -> CompletionRequest:
    """POST /v1/completions, checked."""
    f = Fields(body, COMPLETION_FIELDS)
    model = model_field(f)
    f.neutral("echo", False)
    f.neutral("suffix", "")
    sampling = _sampling(f, limits)
    best_of = f.integer("best_of", 1, limits.max_n)
    if best_of is not None and best_of != sampling.n:
        raise APIError(400, "best_of is not supported by this server (leave it out)", param="best_of",
                       code="unsupported_parameter")
    return CompletionRequest(model, parse_prompt(body.get("prompt"), limits), sampling,
                             f.integer("logprobs", 0, MAX_LOGPROBS))


ROLES = ("system", "user", "assistant", "developer")


def parse_chat(body: dict[str, Any], limits: Limits) -> ChatRequest:
    """POST /v1/chat/completions, checked: messages are {"role", "content"} with a known role and text. The rules
    of a conversation (a system or developer message only first, the user's last, the window) are the chat
    template's, checked where the run is known (completions.chat_prompt)."""
    f = Fields(body, CHAT_FIELDS)
    model = model_field(f)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty array of {\"role\", \"content\"} objects", param="messages")
    total = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise APIError(400, f"messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, \"content\": "
                                f"a string}}", param=f"messages[{i}]")
        total += len(m["content"])
    if total > limits.max_prompt:
        raise APIError(400, f"the messages have {total:,} characters; this server takes at most "
                            f"{limits.max_prompt:,}", param="messages", code="prompt_too_long")
    if "max_completion_tokens" in body and body.get("max_tokens") is not None:
        raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
    sampling = _sampling(f, limits, "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens")
    logprobs = f.boolean("logprobs")
    top = f.integer("top_logprobs", 0, MAX_LOGPROBS)
    if top is not None and not logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return ChatRequest(model, [dict(m) for m in messages], sampling, logprobs, top or 0)


# --- responses -----------------------------------------------------------------------------------

def new_id(prefix: str = "cmpl") -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def _lp(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no -infinity


def completion_logprobs(tokens: Sequence[tuple[int, float, Sequence[tuple[int, float]]]],
                        text_of: Callable[[int], str], offset: int, text: str) -> dict[str, Any]:
    """OpenAI's legacy logprobs object for the tokens behind one piece of text: tokens are (id, logprob,
    [(candidate id, logprob), ...]); offset: where `text` starts in the completion. token_ids is ours."""
    texts = [text_of(i) for i, _, _ in tokens]
    offsets, pos = [], 0
    for t in texts:
        offsets.append(offset + min(pos, len(text)))
        pos += len(t)
    return {"tokens": texts, "token_logprobs": [_lp(lp) for _, lp, _ in tokens],
            "top_logprobs": [{text_of(c): _lp(clp) for c, clp in top} for _, _, top in tokens],
            "text_offset": offsets, "token_ids": [i for i, _, _ in tokens]}


def merge_logprobs(parts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The logprobs of a whole choice from those of its pieces."""
    if not parts:
        return None
    return {k: [x for p in parts for x in p[k]] for k in parts[0]}


def completion_chunk(cid: str, created: int, model: str, index: int, text: str, logprobs: dict | None = None,
                     finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def usage_chunk(cid: str, created: int, model: str, use: dict[str, int],
                object: str = "text_completion") -> dict[str, Any]:
    """The last chunk of a stream that asked for usage (object: "chat.completion.chunk" for chat)."""
    return {"id": cid, "object": object, "created": created, "model": model, "choices": [], "usage": use}


def completion_response(cid: str, created: int, model: str, choices: list[dict[str, Any]],
                        use: dict[str, int], object: str = "text_completion") -> dict[str, Any]:
    """choices: {"index", "text", "logprobs", "finish_reason"} each; for chat (object "chat.completion"),
    {"index", "message", "logprobs", "finish_reason"}."""
    return {"id": cid, "object": object, "created": created, "model": model, "choices": choices, "usage": use}


def chat_logprobs(tokens: Sequence[tuple[int, float, Sequence[tuple[int, float]]]], text_of: Callable[[int], str],
                  bytes_of: Callable[[int], bytes]) -> dict[str, Any]:
    """OpenAI's chat logprobs object for the tokens behind one piece of a reply, tokens as for
    completion_logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
    "bytes"}, ...], "token_id"}, ...]}; token_id (the chosen token's id) is ours. A probability too small for a
    float is -9999.0, as OpenAI gives it."""
    def entry(i: int, lp: float) -> dict[str, Any]:
        return {"token": text_of(i), "logprob": lp if math.isfinite(lp) else UNLIKELY, "bytes": list(bytes_of(i))}

    return {"content": [{**entry(i, lp), "top_logprobs": [entry(c, clp) for c, clp in top], "token_id": i}
                        for i, lp, top in tokens]}


def chat_chunk(cid: str, created: int, model: str, index: int, delta: dict[str, str], logprobs: dict | None = None,
               finish_reason: str | None = None) -> dict[str, Any]:
    """A stream chunk of a chat reply: delta is {"role": "assistant", "content": ""} first, then {"content": piece},
    then {} with the finish_reason."""
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: `data: <json>` and a blank line; the stream ends with sse("[DONE]")."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def model_card(name: str, created: int, details: dict[str, Any]) -> dict[str, Any]:
    """An entry of GET /v1/models; details (ours) under "tinygpt"."""
    return {"id": name, "object": "model", "created": created, "owned_by": "tinygpt", "tinygpt": details}


__all__ = ["Limits", "APIError", "parse_json", "Fields", "model_field", "Sampling", "CompletionRequest",
           "ChatRequest", "parse_prompt", "parse_completion", "parse_chat", "new_id", "now", "completion_logprobs",
           "merge_logprobs", "completion_chunk", "usage", "usage_chunk", "completion_response", "chat_logprobs",
           "chat_chunk", "sse", "model_card", "MAX_LOGPROBS", "MAX_STOP", "COMPLETION_FIELDS", "CHAT_FIELDS",
           "PENALTIES"]
