"""`tinygpt serve` in-process (Starlette's test client): the OpenAI API gives the library's answers, streaming
or not (completions as `generate_text`, chat replies as `ChatSession`); every bad request is a 4xx with one
line; the inspection endpoints are the library's results; the page is served whole from the package."""
from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from serve_runs import shared_runs  # noqa: E402
from tinygpt.inspect import interpret  # noqa: E402
from tinygpt.serve.api import Limits  # noqa: E402
from tinygpt.generation.chat import ChatSession
from tinygpt.data.conversations import Message, render  # noqa: E402
from tinygpt.generation.decoder import Decoder  # noqa: E402
from tinygpt.generation.generate import generate, generate_text, text_pieces  # noqa: E402
from tinygpt.inspect.interpret import AttentionResult  # noqa: E402
from tinygpt.serve.playground import step_window  # noqa: E402
from tinygpt.inspect.report import attention_json, lens_json, saliency_json, steps_json  # noqa: E402
from tinygpt.serve.access import is_loopback  # noqa: E402
from tinygpt.serve.app import PAGE_FILES, create_app  # noqa: E402

LIMITS = Limits(max_tokens=200, max_prompt=300, max_n=4, max_body=20_000)
BASE = "http://localhost"  # a name the server answers to (the test client's own, testserver, is not one)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def app(runs):
    return create_app(list(runs.values()), limits=LIMITS)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE) as c:
        yield c


def _served(app, name):
    return app.state.tinygpt.models[name]


def _events(text: str) -> list[str]:
    """The data of every server-sent event, in order; every event is `data: ...` and a blank line."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


def test_models_and_health(client, runs):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["calculator", "cat", "chat"]
    calc, cat, chat = (m["tinygpt"] for m in data)
    assert (calc["kind"], calc["tokenizer"], calc["vocab_size"], calc["n_layer"], calc["default_temperature"]) == \
        ("task", "word", 35, 4, 0.0)
    assert (cat["kind"], cat["block_size"], cat["n_head"], cat["max_tokens"]) == ("text", 32, 2, LIMITS.max_tokens)
    assert not calc["chat"] and not cat["chat"]
    assert (chat["kind"], chat["chat"], chat["tokenizer"], chat["vocab_size"], chat["default_temperature"],
            chat["default_max_tokens"]) == ("chat", True, "char", cat["vocab_size"] + 4, 0.0, 32)
    assert client.get("/v1/models/cat").json()["id"] == "cat"
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["calculator", "cat", "chat"]
    assert set(health["scheduler"]) == {"running", "waiting", "completed", "cancelled", "failed", "refused"}


def test_completion_is_generate_text(client, app):
    served = _served(app, "cat")
    model, tok = served.subject.model, served.subject.tokenizer
    r = client.post("/v1/completions", json={"model": "cat", "prompt": "the cat", "max_tokens": 40, "seed": 7,
                                             "temperature": 0.9, "top_k": 6, "top_p": 0.95})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    expected = "".join(generate_text(model, tok, "the cat", 40, temperature=0.9, top_k=6, top_p=0.95, seed=7))
    (choice,) = body["choices"]
    assert choice == {"index": 0, "text": expected, "logprobs": None, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 40, "total_tokens": 47}


def test_stream_is_the_same_text_in_pieces(client):
    req = {"model": "cat", "prompt": "the mat", "max_tokens": 50, "seed": 3}  # 50 tokens: the 32-token window slides
    whole = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    r = client.post("/v1/completions", json={**req, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    pieces = [c["choices"][0] for c in chunks if c["choices"]]
    assert "".join(p["text"] for p in pieces) == whole and len(pieces) > 10  # streamed in many pieces
    assert [p["finish_reason"] for p in pieces] == [None] * (len(pieces) - 1) + ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 50
    assert len({c["id"] for c in chunks}) == 1


def test_calculator_answers_as_the_task_does(client, app):
    served = _served(app, "calculator")
    task, model = served.subject.task, served.subject.model
    for q in ("seven times eight", "twenty three plus eighty seven", "ninety minus four"):
        r = client.post("/v1/completions", json={"model": "calculator", "prompt": q})
        choice = r.json()["choices"][0]
        assert choice["text"] == task.answer(model, q)  # greedy, wrapped, ended at <eos>
        generated = task.complete(model, [task.prompt_ids(q)])[0]
        assert choice["finish_reason"] == ("stop" if generated[-1] == task.eos_id else "length")


def test_logprobs_are_the_models(client, app):
    served = _served(app, "calculator")
    task, model, tok = served.subject.task, served.subject.model, served.subject.tokenizer
    ids = task.prompt_ids("seven times eight")
    r = client.post("/v1/completions", json={"model": "calculator", "prompt": "seven times eight", "logprobs": 3,
                                             "max_tokens": 4})
    lp = r.json()["choices"][0]["logprobs"]
    seq = list(ids)
    for k, (tid, text, chosen, top) in enumerate(zip(lp["token_ids"], lp["tokens"], lp["token_logprobs"],
                                                     lp["top_logprobs"])):
        with torch.no_grad():
            expect = torch.log_softmax(model(torch.tensor([seq]))[0][0, -1].float(), -1)
        assert text == tok.decode([tid]) and chosen == pytest.approx(float(expect[tid]), abs=1e-5)
        assert chosen == pytest.approx(max(top.values()), abs=1e-6)  # greedy: the chosen one is the top one
        assert len(top) == 3 and sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
        seq.append(tid)
    assert " ".join(lp["tokens"]) == r.json()["choices"][0]["text"]  # words: the text is the tokens, spaced
    assert lp["text_offset"][0] == 0


def test_n_choices_take_consecutive_seeds(client, app):
    served = _served(app, "cat")
    r = client.post("/v1/completions", json={"model": "cat", "prompt": "the", "max_tokens": 12, "n": 3, "seed": 5})
    texts = [c["text"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]
    assert texts == ["".join(generate_text(served.subject.model, served.subject.tokenizer, "the", 12, seed=5 + i,
                                           temperature=0.8)) for i in range(3)]
    stream = client.post("/v1/completions", json={"model": "cat", "prompt": "the", "max_tokens": 12, "n": 3,
                                                  "seed": 5, "stream": True})
    got = ["", "", ""]
    for e in _events(stream.text)[:-1]:
        c = json.loads(e)["choices"][0]
        got[c["index"]] += c["text"]
    assert got == texts


def test_stop_strings_end_the_text_before_them(client):
    req = {"model": "cat", "prompt": "the cat", "max_tokens": 60, "seed": 11}
    full = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    stop = full[20:22]
    cut = client.post("/v1/completions", json={**req, "stop": [stop, "zzz"]}).json()["choices"][0]
    assert cut["text"] == full[:full.index(stop)] and cut["finish_reason"] == "stop"
    streamed = client.post("/v1/completions", json={**req, "stop": stop, "stream": True})
    text = "".join(json.loads(e)["choices"][0]["text"] for e in _events(streamed.text)[:-1])
    assert text == cut["text"]


def test_prompt_as_ids_is_the_same_prompt(client):
    ids = client.post("/inspect/tokenize", json={"model": "calculator", "prompt": "seven times eight"}).json()
    assert ids["tokens"] == ["seven", "times", "eight", "="]  # the task's wrapping
    a = client.post("/v1/completions", json={"model": "calculator", "prompt": "seven times eight"}).json()
    b = client.post("/v1/completions", json={"model": "calculator", "prompt": ids["ids"]}).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    text = client.post("/inspect/tokenize", json={"model": "cat", "prompt": "at the mat"}).json()
    assert text["tokens"] == list("at the mat") and text["texts"] == list("at the mat")


def test_text_pieces_pull_tokens_only_as_needed(app):
    tok = _served(app, "cat").subject.tokenizer
    pulled = []

    def tokens():
        for t in tok.encode("the cat"):
            pulled.append(t)
            yield t

    got = [(piece, len(pulled)) for piece in text_pieces(tok, tokens(), stop=["at "])]
    # a piece as soon as its token decodes; "a", then "at", held back (they may start the stop string) until the
    # tokens run out
    assert got == [("t", 1), ("h", 2), ("e", 3), (" ", 4), ("c", 5), ("at", 7)]


def test_step_window_is_the_decoders():
    from tinygpt import GPT, ModelConfig
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    for prompt_len in (3, 8, 12):
        dec = Decoder(model, [i % 11 for i in range(prompt_len)])
        for _ in dec.generate(20, temperature=0):
            pass
        assert [step_window(prompt_len, i, 8) for i in range(20)] == dec.windows


def test_inspect_step_is_the_library(client, app):
    served = _served(app, "cat")
    model, tok = served.subject.model, served.subject.tokenizer
    prompt = tok.encode("the cat sat on the mat. the cat")  # 31 tokens + 5: the window has slid
    tokens = tok.encode("sat o")
    r = client.post("/inspect/step", json={"model": "cat", "prompt": prompt, "tokens": tokens, "token": 9,
                                           "temperature": 0.7, "top_k": 4})
    v = r.json()
    start, end = step_window(len(prompt), len(tokens), 32)
    context = (prompt + tokens)[start:end]
    assert v["window"] == [start, end] and v["context_ids"] == context and end - start <= 32 and start > 0
    assert v["attention"] == {**attention_json(interpret.attention(model, context), tok), "offset": 0}
    assert v["logit_lens"] == lens_json(interpret.logit_lens(model, context), tok)
    assert v["saliency"] == saliency_json(interpret.saliency(model, context, 9), tok)
    step = steps_json(interpret.trace_generation(model, context, 1, 0.7, 4, None, seed=0, k=10), tok)["steps"][0]
    step = json.loads(json.dumps(step))  # as it travels
    assert (v["candidates"]["before"], v["candidates"]["after"]) == (step["before"], step["after"])
    assert v["candidates"]["kept"] == 4 and len(v["candidates"]["after"]) == 4  # top-k 4 keeps four
    assert v["token"] == tok.id_to_piece(9)


def test_inspect_crops_long_attention(app):
    import tinygpt.serve.playground as pg
    served = _served(app, "cat")
    ids = served.subject.tokenizer.encode("the cat sat on")
    v = pg.step(served, ids, [], max_positions=5)
    full = interpret.attention(served.subject.model, ids)
    cropped = AttentionResult(ids[-5:], full.maps[:, :, -5:, -5:])
    assert v["attention"] == {**attention_json(cropped, served.subject.tokenizer), "offset": len(ids) - 5}


# --- chat ------------------------------------------------------------------------------------------

def _chat(client, messages, **kw):
    return client.post("/v1/chat/completions", json={"model": "chat", "messages": messages, **kw})


def _user(text):
    return [{"role": "user", "content": text}]


def test_a_chat_reply_is_chat_sessions(client, app):
    """Unset, the temperature is 0 (greedy, as `tinygpt chat`): the reply is ChatSession's, and the model read the
    template's rendering of the conversation."""
    served = _served(app, "chat")
    model, tok = served.subject.model, served.subject.tokenizer
    r = _chat(client, _user("the cat"), max_tokens=10)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "chat" and r.headers["x-tinygpt-dropped-messages"] == "0"
    expected = "".join(ChatSession(model, tok, max_new_tokens=10).reply("the cat"))
    prompt = render(tok, [Message("user", "the cat")], reply=True)[0]
    produced = generate(model, prompt, 10, temperature=0, eos_ids=list(tok.special_ids.values()))
    (choice,) = body["choices"]
    assert choice == {"index": 0, "message": {"role": "assistant", "content": expected}, "logprobs": None,
                      "finish_reason": "stop" if produced[-1] in tok.special_ids.values() else "length"}
    assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": len(produced),
                             "total_tokens": len(prompt) + len(produced)}
    assert body["tinygpt"] == {"dropped_messages": 0, "prompt_ids": prompt}
    # max_completion_tokens is chat's newer name for max_tokens
    short = _chat(client, _user("the cat"), max_completion_tokens=3).json()
    assert short["choices"][0]["message"]["content"] == expected[:3] and short["usage"]["completion_tokens"] == 3


def test_a_long_conversation_drops_its_oldest_exchanges_as_chat_sessions_do(client, app):
    """Three exchanges do not fit a 32-token window with room for the reply: the oldest go, the system message
    (sent as "developer", OpenAI's newer name) stays, and the reply is the session's."""
    served = _served(app, "chat")
    session = ChatSession(served.subject.model, served.subject.tokenizer, system="a", max_new_tokens=6)
    for text in ("the cat", "on the mat"):
        "".join(session.reply(text))
    history = [{"role": m.role, "content": m.content} for m in session.history]
    expected = "".join(session.reply("cat"))
    assert session.dropped >= 2
    r = _chat(client, [{"role": "developer", "content": "a"}, *history, *_user("cat")], max_tokens=6)
    body = r.json()
    assert body["choices"][0]["message"]["content"] == expected
    assert body["tinygpt"]["dropped_messages"] == session.dropped == int(r.headers["x-tinygpt-dropped-messages"])
    assert body["tinygpt"]["prompt_ids"][:3] == [served.subject.tokenizer.role_id("system"),
                                                 *served.subject.tokenizer.encode("a"), served.subject.tokenizer.end_id]


def test_a_streamed_chat_reply_is_the_same_reply_in_deltas(client):
    whole = _chat(client, _user("on the mat"), max_tokens=12).json()
    r = _chat(client, _user("on the mat"), max_tokens=12, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-") and chunks[0]["tinygpt"]["dropped_messages"] == 0
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    assert choices[-1]["delta"] == {} and choices[-1]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["finish_reason"] is None for c in choices[:-1])
    text = "".join(c["delta"]["content"] for c in choices[1:-1])
    assert text == whole["choices"][0]["message"]["content"] and len(choices) > 4  # streamed in pieces
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_n_chat_replies_take_consecutive_seeds(client, app):
    served = _served(app, "chat")
    model, tok = served.subject.model, served.subject.tokenizer
    req = {"max_tokens": 10, "n": 3, "seed": 5, "temperature": 0.9, "top_k": 5}
    r = _chat(client, _user("cat"), **req).json()
    texts = [c["message"]["content"] for c in sorted(r["choices"], key=lambda c: c["index"])]
    assert texts == ["".join(ChatSession(model, tok, max_new_tokens=10).reply("cat", temperature=0.9, top_k=5,
                                                                               seed=5 + i)) for i in range(3)]
    assert len(set(texts)) > 1  # sampled, not greedy
    stream = _chat(client, _user("cat"), **req, stream=True)
    got, roles = ["", "", ""], 0
    for e in _events(stream.text)[:-1]:
        c = json.loads(e)["choices"][0]
        roles += c["delta"].get("role") == "assistant"
        got[c["index"]] += c["delta"].get("content", "")
    assert got == texts and roles == 3


def test_chat_logprobs_are_the_models(client, app):
    served = _served(app, "chat")
    model, tok = served.subject.model, served.subject.tokenizer
    body = _chat(client, _user("the cat"), max_tokens=6, logprobs=True, top_logprobs=3).json()
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    seq = list(body["tinygpt"]["prompt_ids"])
    for entry in content:
        with torch.no_grad():
            expect = torch.log_softmax(model(torch.tensor([seq]))[0][0, -1].float(), -1)
        tid = entry["token_id"]
        assert entry["token"] == tok.decode([tid]) and entry["bytes"] == list(entry["token"].encode("utf-8"))
        assert entry["logprob"] == pytest.approx(float(expect[tid]), abs=1e-5)
        top = entry["top_logprobs"]
        assert [t["logprob"] for t in top] == pytest.approx(expect.topk(3).values.tolist(), abs=1e-5)
        assert top[0]["token"] == entry["token"] and set(top[0]) == {"token", "logprob", "bytes"}  # greedy
        seq.append(tid)
    assert "".join(e["token"] for e in content) == choice["message"]["content"]
    streamed = _chat(client, _user("the cat"), max_tokens=6, logprobs=True, stream=True)
    entries = [e for ev in _events(streamed.text)[:-1] for c in json.loads(ev)["choices"]
               for e in (c["logprobs"] or {"content": []})["content"]]
    assert [(e["token"], e["top_logprobs"]) for e in entries] == [(e["token"], []) for e in content]


CHAT_BAD = [  # (what, body, status, words the message must hold)
    ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0] must be"),
    ("content not text", {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0] must be"),
    ("no messages", {"messages": []}, 400, "messages must be a non-empty array"),
    ("system not first", {"messages": [*_user("cat"), {"role": "system", "content": "a"}, *_user("cat")]}, 400,
     "a system message may only come first"),
    ("developer not first", {"messages": [*_user("cat"), {"role": "developer", "content": "a"}, *_user("cat")]},
     400, "a system message may only come first"),
    ("last message the assistant's", {"messages": [*_user("cat"), {"role": "assistant", "content": "a"}]}, 400,
     "the last message must be the user's, not the assistant's"),
    ("only a system message", {"messages": [{"role": "system", "content": "a"}]}, 400,
     "the last message must be the user's, not the system's"),
    ("too long for the window", {"messages": _user("the cat sat " * 4)}, 400,
     "this message is too long: with the conversation's start it is 51 tokens, and the model reads at most 32"),
    ("both max_tokens", {"messages": _user("cat"), "max_tokens": 3, "max_completion_tokens": 3}, 400,
     "give max_tokens or max_completion_tokens, not both"),
    ("top_logprobs alone", {"messages": _user("cat"), "top_logprobs": 2}, 400, "top_logprobs needs logprobs: true"),
    ("not a chat run", {"model": "cat", "messages": _user("cat")}, 400,
     "this run is not a chat model: cat is a text run; use /v1/completions"),
]


@pytest.mark.parametrize("what,body,status,words", CHAT_BAD, ids=[b[0] for b in CHAT_BAD])
def test_bad_chat_requests_get_one_line_4xx(client, what, body, status, words):
    r = client.post("/v1/chat/completions", json={"model": "chat", **body})
    err = r.json()["error"]
    assert r.status_code == status and words in err["message"], err
    assert "\n" not in err["message"] and err["type"] == "invalid_request_error"
    if what == "too long for the window":
        assert err["code"] == "context_length_exceeded" and err["param"] == "messages"


def test_page_is_served_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text and 'href="/static/style.css"' in page.text
    for name, media in PAGE_FILES.items():
        r = client.get("/" if name == "index.html" else f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == media
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", r.text), name  # nothing from the network


def test_no_path_from_a_client_is_read(client):
    for path in ("/static/../serve.py", "/static/serve.py", "/static/..%2Fserve.py", "/static/%2e%2e/api.py"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json(), path
    for model in ("../cat", "/etc/passwd", str(Path.cwd())):
        r = client.post("/v1/completions", json={"model": model, "prompt": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


OK = {"model": "cat", "prompt": "the cat", "max_tokens": 3}
BAD = [  # (what, body: dict or raw bytes, status, words the message must hold)
    ("invalid JSON", b'{"model": "cat",', 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, "must be a JSON object"),
    ("not UTF-8", b'{"model": "\xff"}', 400, "not UTF-8"),
    ("NaN temperature", b'{"model": "cat", "prompt": "x", "temperature": NaN}', 400, "NaN"),
    ("infinite top_p", b'{"model": "cat", "prompt": "x", "top_p": Infinity}', 400, "Infinity"),
    ("string temperature", {**OK, "temperature": "hot"}, 400, "temperature must be a number"),
    ("temperature too high", {**OK, "temperature": 2.5}, 400, "temperature must be in [0, 2]"),
    ("boolean temperature", {**OK, "temperature": True}, 400, "temperature must be a number"),
    ("top_p 0", {**OK, "top_p": 0}, 400, "top_p must be in (0, 1]"),
    ("top_k 0", {**OK, "top_k": 0}, 400, "top_k must be between 1"),
    ("negative max_tokens", {**OK, "max_tokens": -5}, 400, "max_tokens must be between 1 and 200"),
    ("huge max_tokens", {**OK, "max_tokens": 10 ** 12}, 400, "(this server's limit)"),
    ("fractional max_tokens", {**OK, "max_tokens": 2.5}, 400, "max_tokens must be a whole number"),
    ("n 0", {**OK, "n": 0}, 400, "n must be between 1 and 4"),
    ("n over the limit", {**OK, "n": 50}, 400, "this server's limit"),
    ("logprobs over the limit", {**OK, "logprobs": 21}, 400, "logprobs must be between 0 and 20"),
    ("negative seed", {**OK, "seed": -1}, 400, "seed must be between 0"),
    ("stream not a boolean", {**OK, "stream": "yes"}, 400, "stream must be true or false"),
    ("unknown field", {**OK, "temprature": 1}, 400, "unrecognized request argument supplied: temprature"),
    ("a logit bias", {**OK, "logit_bias": {"1": 5}}, 400, "logit_bias is not supported"),
    ("echo", {**OK, "echo": True}, 400, "echo is not supported"),
    ("too many stops", {**OK, "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
    ("empty stop", {**OK, "stop": [""]}, 400, "must not be empty"),
    ("stop of numbers", {**OK, "stop": [1]}, 400, "stop must be a string or an array of strings"),
    ("stream_options without stream", {**OK, "stream_options": {"include_usage": True}}, 400, "needs stream"),
    ("no model", {"prompt": "x"}, 400, "model is required"),
    ("unknown model", {**OK, "model": "gpt-4"}, 404, "does not exist here"),
    ("no prompt", {"model": "cat"}, 400, "prompt is required"),
    ("empty prompt", {**OK, "prompt": ""}, 400, "the prompt is empty: give the model some text to read"),
    ("prompt of objects", {**OK, "prompt": {"text": "x"}}, 400, "prompt must be a string or an array of token ids"),
    ("several prompts", {**OK, "prompt": ["a", "b"]}, 400, "one prompt"),
    ("prompt too long", {**OK, "prompt": "the cat " * 40}, 400, "at most 300"),
    ("ids too long", {**OK, "prompt": [1] * 301}, 400, "at most 300"),
    ("id outside the vocabulary", {**OK, "prompt": [1, 99]}, 400, "token id 99 is outside the vocabulary"),
    ("a question the calculator refuses", {**OK, "model": "calculator", "prompt": "what is love"}, 400,
     "unknown word"),
    ("body too large", {**OK, "prompt": "x" * 30_000}, 413, "larger than this server's limit of 20,000 bytes"),
]


@pytest.mark.parametrize("what,body,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_one_line_4xx(client, what, body, status, words):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = client.post("/v1/completions", **kw)
    err = r.json()["error"]
    assert r.status_code == status and words in err["message"], err
    assert "\n" not in err["message"] and "Traceback" not in r.text
    assert err["type"] == "invalid_request_error" and set(err) == {"message", "type", "param", "code"}


def test_every_endpoint_refuses_cleanly_and_keeps_serving(client):
    cases = [("post", "/v1/chat/completions", {"model": "cat", "messages": [{"role": "user", "content": "hi"}]},
              400, "this run is not a chat model"),
             ("post", "/v1/chat/completions", {"model": "cat", "messages": []}, 400, "messages must be"),
             ("post", "/v1/chat/completions", {"model": "cat", "messages": [{"role": "robot", "content": "x"}]},
              400, "messages[0] must be"),
             ("post", "/inspect/tokenize", {"model": "cat", "prompt": 5}, 400, "prompt must be a string"),
             ("post", "/inspect/tokenize", {"model": "calculator", "prompt": "seven times"}, 400, "not of the form"),
             ("post", "/inspect/step", {"model": "cat", "prompt": "the", "tokens": [1, -2]}, 400, "tokens must be"),
             ("post", "/inspect/step", {"model": "cat", "prompt": "the", "token": 500}, 400, "token must be between"),
             ("post", "/inspect/step", {"model": "cat", "prompt": "the", "temperature": -1}, 400, "temperature"),
             ("get", "/v1/completions", None, 405, "method not allowed"),
             ("get", "/v2/nothing", None, 404, "not found"),
             ("get", "/v1/models/nope", None, 404, "does not exist here")]
    for method, path, body, status, words in cases:
        r = getattr(client, method)(path, **({} if body is None else {"json": body}))
        msg = r.json()["error"]["message"]
        assert r.status_code == status and words in msg and "\n" not in msg, (path, body, msg)
    assert client.post("/v1/completions", json=OK).status_code == 200  # still serving


def test_a_full_queue_is_a_503(runs):
    app = create_app(list(runs.values()), limits=LIMITS, max_running=1, max_waiting=0)
    release = threading.Event()

    def blocked():
        release.wait(10)
        yield None

    with TestClient(app, base_url=BASE) as c:
        sched = app.state.tinygpt.scheduler
        c.portal.call(_submit, sched, blocked())  # the one running place, taken
        r = c.post("/v1/completions", json=OK)
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_busy"
        assert "the server is busy" in r.json()["error"]["message"]
        release.set()
        for _ in range(100):
            if sched.stats()["running"] == 0:
                break
            threading.Event().wait(0.02)
        assert c.post("/v1/completions", json=OK).status_code == 200
        assert sched.stats()["refused"] == 1


async def _submit(sched, steps):
    return sched.submit(steps)


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_serve_cli(cli, runs, monkeypatch):
    import tinygpt.serve.app as serve_mod

    code, out, _ = cli("serve", "--help")
    assert code == 0 and out.startswith("usage: tinygpt serve ")
    calls = []
    monkeypatch.setattr(serve_mod, "serve", lambda app, host, port, ready: calls.append((app, host, port)) or
                        ready(f"http://{host}:{port}"))
    code, _, err = cli("serve", runs["calculator"], runs["cat"], "--port", "0", "--max_tokens", "7")
    app, host, port = calls[-1]
    assert code == 0 and (host, port) == ("127.0.0.1", 0) and "warning" not in err
    assert sorted(app.state.tinygpt.models) == ["calculator", "cat"] and app.state.tinygpt.limits.max_tokens == 7
    assert "open http://127.0.0.1:0 in a browser" in err and "serving calculator: a task run" in err
    code, _, err = cli("serve", runs["cat"], "--host", "0.0.0.0")
    assert code == 0 and err.startswith("warning: listening on 0.0.0.0: anyone who can reach this machine")
    code, _, err = cli("serve", runs["cat"], runs["cat"] / "best")
    assert code == 2 and err.count("\n") == 1 and "two runs are named 'cat'" in err
    code, _, err = cli("serve", runs["cat"].parent / "missing")
    assert code == 2 and err.count("\n") == 1 and "no such run" in err
    code, _, err = cli("serve", runs["cat"], "--port", "-1")
    assert code == 2 and err.count("\n") == 1


# --- the sampling penalties: OpenAI's frequency_penalty and presence_penalty, vLLM's repetition_penalty -------

PENALTY_BAD = [  # (field, value, words the message must hold): sampling.check_settings' rules, named
    ("frequency_penalty", 2.5, "frequency_penalty must be a number in [-2, 2] (0 means none), got 2.5"),
    ("presence_penalty", -3, "presence_penalty must be a number in [-2, 2] (0 means none), got -3"),
    ("repetition_penalty", 0, "repetition_penalty must be a number > 0 (1 means no penalty), got 0"),
    ("repetition_penalty", -1.5, "repetition_penalty must be a number > 0"),
    ("frequency_penalty", "high", "frequency_penalty must be a number, got a string"),
    ("presence_penalty", True, "presence_penalty must be a number, got a boolean"),
]


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("name,value,words", PENALTY_BAD, ids=[f"{b[0]}={b[1]}" for b in PENALTY_BAD])
def test_bad_penalties_are_400s_that_name_the_field(client, endpoint, name, value, words):
    body = OK if endpoint == "/v1/completions" else {"model": "chat", "messages": _user("cat"), "max_tokens": 3}
    r = client.post(endpoint, json={**body, name: value})
    err = r.json()["error"]
    assert r.status_code == 400 and words in err["message"] and err["param"] == name, err
    assert err["type"] == "invalid_request_error" and "\n" not in err["message"]


def test_penalties_reach_complete(client, monkeypatch):
    """Accepted penalties are handed to completions.complete as keyword arguments, the neutral ones left out (so
    a request without penalties generates exactly as before)."""
    import tinygpt.serve.app as app_mod
    from tinygpt.serve.api import PENALTIES
    from tinygpt.serve.completions import complete

    calls = []

    def spy(served, ids, **settings):
        calls.append({k: settings[k] for k in PENALTIES if k in settings})
        return complete(served, ids, **{k: v for k, v in settings.items() if k not in PENALTIES})

    monkeypatch.setattr(app_mod, "complete", spy)
    given = {"frequency_penalty": 0.5, "presence_penalty": -1, "repetition_penalty": 1.3}
    assert client.post("/v1/completions", json={**OK, **given}).status_code == 200
    assert calls[-1] == {"frequency_penalty": 0.5, "presence_penalty": -1.0, "repetition_penalty": 1.3}
    chat = {"model": "chat", "messages": _user("cat"), "max_tokens": 3}
    assert client.post("/v1/chat/completions", json={**chat, "presence_penalty": 2, "n": 2}).status_code == 200
    assert calls[-2:] == [{"presence_penalty": 2.0}] * 2  # every choice
    neutral = {"frequency_penalty": 0, "presence_penalty": 0.0, "repetition_penalty": 1}
    assert client.post("/v1/completions", json={**OK, **neutral}).status_code == 200
    assert calls[-1] == {}


def _greedy_with_penalties(model, ids, n, repetition_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0):
    """The penalties written out, one token at a time on the whole sequence (no cache): every token seen so far
    (prompt included) has its logit divided by r if positive, multiplied by r if not; a token generated c times
    loses f * c + p * (c > 0); then the greedy choice."""
    seq, new = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq]))[0][0, -1].float().tolist()
            for t in set(seq):
                logits[t] = logits[t] / repetition_penalty if logits[t] > 0 else logits[t] * repetition_penalty
            for t in set(new):
                c = new.count(t)
                logits[t] -= frequency_penalty * c + presence_penalty * (c > 0)
            nxt = max(range(len(logits)), key=lambda i: logits[i])
            seq.append(nxt)
            new.append(nxt)
    return new


def test_penalties_change_the_reply_as_written_out(client, app):
    served = _served(app, "cat")
    model, tok = served.subject.model, served.subject.tokenizer
    prompt = tok.encode("the cat")
    plain = _greedy_with_penalties(model, prompt, 20)
    for given in ({"repetition_penalty": 1.5}, {"frequency_penalty": 1.0}, {"presence_penalty": 1.5},
                  {"repetition_penalty": 1.2, "frequency_penalty": 0.5, "presence_penalty": 0.5}):
        r = client.post("/v1/completions", json={"model": "cat", "prompt": prompt, "max_tokens": 20,
                                                 "temperature": 0, "logprobs": 0, **given})
        assert r.status_code == 200, r.json()
        expected = _greedy_with_penalties(model, prompt, 20, **given)
        assert r.json()["choices"][0]["logprobs"]["token_ids"] == expected
        # the reply changed (a repetition penalty alone leaves this tiny model's greedy reply as it was)
        assert expected != plain or set(given) == {"repetition_penalty"}


# --- what the page asks for ---------------------------------------------------------------------------------

def test_an_empty_prompt_is_tokenized_to_nothing_and_refused_in_the_apis_words(client):
    """The page tokenizes as the user types: an empty box reads as no tokens, not as an error. Generating from
    nothing is refused, in the API's words (the command line's wording names a flag the page does not have)."""
    for model in ("cat", "calculator"):
        r = client.post("/inspect/tokenize", json={"model": model, "prompt": ""})
        assert r.status_code == 200 and r.json() == {"ids": [], "tokens": [], "texts": [], "notices": []}
    for path, body in (("/v1/completions", {"model": "cat", "prompt": ""}),
                       ("/inspect/step", {"model": "cat", "prompt": ""})):
        err = client.post(path, json=body).json()["error"]
        assert err["message"] == "the prompt is empty: give the model some text to read" and err["param"] == "prompt"


SYSTEM = "the cat sat on the mat. the cat sat on the mat. a cat sat on."  # 61 characters


def test_a_system_message_that_takes_the_window_is_named_with_what_fits(client, app):
    """A system message and a short question that do not fit together: the refusal blames the system message, not
    the question, and says how long a system message fits; one that long is answered."""
    assert len(SYSTEM) == 61
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "on the mat"}]
    r = client.post("/v1/chat/completions", json={"model": "chat", "messages": messages, "max_tokens": 3})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert err["message"].startswith("the system message leaves no room for this message: it is 63 tokens")
    assert "fewer words" not in err["message"]
    fits = int(re.search(r"shorten the system message to at most (\d+) tokens", err["message"]).group(1))
    tok = _served(app, "chat").subject.tokenizer
    assert len(tok.encode(SYSTEM[:fits])) == fits  # one character, one token: the suggestion is exact
    for length, status in ((fits, 200), (fits + 1, 400)):
        shorter = [{"role": "system", "content": SYSTEM[:length]}, messages[1]]
        r = client.post("/v1/chat/completions", json={"model": "chat", "messages": shorter, "max_tokens": 3})
        assert r.status_code == status, (length, r.json())
