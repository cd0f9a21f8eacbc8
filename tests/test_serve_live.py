"""`tinygpt serve` on a real socket (uvicorn on 127.0.0.1): the official `openai` client (completions and chat),
16 concurrent streaming clients, clients that go away, and the page in a real headless Chromium (Debian's, at
/usr/bin/chromium), in both its modes: continuing text, and a conversation with a chat run."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow  # a real server, real clients and a real browser: seconds each

from serve_runs import shared_runs  # noqa: E402
from tinygpt.serve.api import Limits  # noqa: E402
from tinygpt.generation.chat import ChatSession  # noqa: E402
from tinygpt.generation.generate import generate_text  # noqa: E402
from tinygpt.serve.app import create_app, running  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = shared_runs(tmp_path_factory)
    app = create_app(list(runs.values()), limits=Limits(max_tokens=20_000))
    with running(app) as url:
        yield url, app


def _health(url: str) -> dict:
    return httpx.get(f"{url}/health").json()["scheduler"]


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _library_text(app, prompt: str, n: int, seed: int) -> str:
    served = app.state.tinygpt.models["cat"]
    model, tok = served.subject.model, served.subject.tokenizer
    return "".join(generate_text(model, tok, prompt, n, temperature=0.8, seed=seed))


def _library_reply(app, text: str, n: int) -> str:
    """The chat run's greedy reply to one message, as `tinygpt chat` gives it."""
    served = app.state.tinygpt.models["chat"]
    return "".join(ChatSession(served.subject.model, served.subject.tokenizer, max_new_tokens=n).reply(text))


def test_openai_client_streams_and_not(server):
    openai = pytest.importorskip("openai")
    url, app = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["calculator", "cat", "chat"]
    expected = _library_text(app, "the cat", 30, seed=4)
    whole = client.completions.create(model="cat", prompt="the cat", max_tokens=30, seed=4, temperature=0.8)
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 30
    stream = client.completions.create(model="cat", prompt="the cat", max_tokens=30, seed=4, temperature=0.8,
                                       stream=True, logprobs=2)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == expected and len(chunks) > 5
    assert sum(len(c.choices[0].logprobs.tokens) for c in chunks if c.choices[0].logprobs) == 30
    with pytest.raises(openai.BadRequestError, match="this run is not a chat model"):
        client.chat.completions.create(model="cat", messages=[{"role": "user", "content": "hello"}])
    # chat, whole and streamed: the reply is ChatSession's (greedy unless a temperature is given)
    reply = _library_reply(app, "the cat", 10)
    messages = [{"role": "user", "content": "the cat"}]
    whole = client.chat.completions.create(model="chat", messages=messages, max_tokens=10)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == reply and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.model_extra["tinygpt"]["dropped_messages"] == 0
    stream = client.chat.completions.create(model="chat", messages=messages, max_completion_tokens=10, stream=True,
                                            logprobs=True, top_logprobs=2, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(t.token for t in tokens) == reply and all(len(t.top_logprobs) == 2 for t in tokens)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    with pytest.raises(openai.BadRequestError, match="the last message must be the user's"):
        client.chat.completions.create(model="chat", messages=[*messages, {"role": "assistant", "content": "a"}])
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client.completions.create(model="gpt-4", prompt="x")


def _load_bench():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "bench" / "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_sixteen_concurrent_streaming_clients(server):
    url, app = server
    bench = _load_bench()
    before = _health(url)
    bodies = [{"model": "cat", "prompt": "the mat", "max_tokens": 40, "seed": s, "temperature": 0.8, "logprobs": 0}
              for s in range(16)]  # the bench counts tokens through their log-probabilities
    replies, wall = bench.run_clients(url, "/v1/completions", bodies, timeout=60)
    assert [r.error for r in replies] == [None] * 16
    assert all(r.done and r.tokens == 40 and r.finish_reason == "length" for r in replies)
    assert [r.text for r in replies] == [_library_text(app, "the mat", 40, s) for s in range(16)]  # complete, correct
    summary = bench.summarize(replies, wall)
    assert summary["errors"] == 0 and summary["tokens"] == 640 and summary["tokens_per_s"] > 0
    assert 0 < summary["ttft_p50_ms"] <= summary["ttft_p95_ms"] <= 1000 * wall
    after = _health(url)
    assert after["completed"] - before["completed"] == 16 and after["running"] == 0 and after["failed"] == 0


def test_a_client_that_goes_away_stops_its_generation(server):
    url, _ = server
    before = _health(url)
    body = {"model": "cat", "prompt": "the", "max_tokens": 20_000, "temperature": 0.8}  # minutes, if not stopped
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
            first = next(r.iter_lines())
            assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["finish_reason"] is None
    # the stream is closed: the server notices, cancels the job, and the worker drops it
    assert _wait_for(lambda: _health(url)["cancelled"] == before["cancelled"] + 1 and _health(url)["running"] == 0)
    with pytest.raises(httpx.ReadTimeout):  # the same, not streamed: the client gives up waiting
        httpx.post(f"{url}/v1/completions", json=body, timeout=0.5)
    assert _wait_for(lambda: _health(url)["cancelled"] == before["cancelled"] + 2 and _health(url)["running"] == 0)
    assert _health(url)["completed"] == before["completed"]  # neither ran to its end
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _png_colours(path: Path) -> int:
    """How many distinct colours a non-interlaced 8-bit RGB(A) PNG holds (a blank page has one or two)."""
    data = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    width, height, depth, colour = header[:4]
    channels = {2: 3, 6: 4}[colour]
    raw, stride = zlib.decompress(idat), width * channels
    seen, prev = set(), bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo the PNG filters (None, Sub, Up, Average, Paeth)
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            seen.update(bytes(line[i:i + 3]) for i in range(0, stride, channels * 4))
        prev = line
    return len(seen)


def _browser():
    """Playwright driving Debian's Chromium; skipped where either is missing, except in CI (.ci/run installs both)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the browser test needs playwright (the test extra)")
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright


@contextlib.contextmanager
def _page(url: str, tmp_path: Path, ready: str | None = "#run option[value=cat]"):
    """The page at url in headless Chromium: (page, errors: the page's script errors and failed requests); ready:
    what to wait for before handing the page over."""
    sync_playwright = _browser()
    profile = tempfile.mkdtemp(dir=tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                                       headless=True, viewport={"width": 1300, "height": 900})
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(url)
            if ready:
                page.wait_for_selector(ready, state="attached")
            yield page, errors
        finally:
            browser.close()


def _check_screenshot(shot: Path) -> None:
    width, height = _png_size(shot)
    assert width == 1300 and height >= 900 and _png_colours(shot) > 20  # a drawn page, not a blank one
    if os.environ.get("TINYGPT_KEEP_SCREENSHOT"):  # to look at it: TINYGPT_KEEP_SCREENSHOT=dir pytest ...
        shutil.copy(shot, Path(os.environ["TINYGPT_KEEP_SCREENSHOT"]) / shot.name)


def test_the_page_in_a_real_browser(server, tmp_path):
    url, app = server
    served = app.state.tinygpt.models["cat"]
    L, H = served.subject.model.attention_layers, served.subject.model.attention_heads
    with _page(url, tmp_path) as (page, errors):
        page.select_option("#run", "cat")
        page.fill("#prompt", "the cat")
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 7")
        page.fill("#seed", "2")
        page.evaluate("() => { const s = document.getElementById('max_tokens'); s.value = 24; "
                      "s.dispatchEvent(new Event('input')); }")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('.tok.gen').length === 24 && "
                               "!document.getElementById('generate').disabled", timeout=30_000)
        shown = "".join(page.locator(".tok.gen").all_inner_texts())
        assert shown.replace("∅", "") == _library_text(app, "the cat", 24, seed=2)  # what the library says
        page.locator(".tok.gen").nth(4).hover()
        assert page.locator("#tooltip").is_visible() and "step 5" in page.locator("#tooltip").inner_text()
        page.locator(".tok.gen").nth(4).click()
        page.wait_for_selector("#attention .head canvas")
        assert page.locator("#attention .head").count() == L * H  # the grid: every layer and head
        assert page.locator("#lens tr").count() == 1 + L + 1  # header, embed, one row per block
        assert page.locator("#saliency .ptok").count() == 7 + 4  # the window read: prompt + 4 tokens
        assert page.locator("#candidates tr").count() > 1
        page.locator("#attention .head").nth(1).click()
        assert page.locator("#head-detail .ptok").count() == 11
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        # branch: continue from the second candidate of step 5 instead of the token sampled there
        sampled = [int(x) for x in page.locator(".tok.gen").evaluate_all("els => els.map(e => e.dataset.id)")]
        prefix = sampled[:4]
        before = page.evaluate("state.inspected.candidates.before_ids")
        k = next(k for k, i in enumerate(before) if i != sampled[4])  # a candidate other than the one sampled
        candidate = before[k]
        page.locator("#candidates button.branch").nth(k).click()
        # the inspector shows the step as it now is: the candidate chosen, not the token that was sampled there
        page.wait_for_function(f"state.inspected && state.inspected.token_id === {candidate}", timeout=30_000)
        text = page.evaluate(f"visible(state.inspected.candidates.texts['{candidate}'])")
        assert page.locator("#step-title").inner_text().startswith(f"Step 5: {text} ")
        assert page.locator("#candidates tr.chosen td.piece").inner_text() == f"▶ {text}"
        page.wait_for_function("document.querySelectorAll('.tok.gen').length === 24 && "
                               "document.querySelector('.tok.gen.branched') !== null && "
                               "!document.getElementById('generate').disabled", timeout=30_000)
        ids = [int(x) for x in page.locator(".tok.gen").evaluate_all("els => els.map(e => e.dataset.id)")]
        assert ids[:5] == prefix + [candidate]
        assert "branched" in page.locator(".tok.gen").nth(4).get_attribute("class")
        prompt = served.subject.tokenizer.encode("the cat") + ids[:5]  # the rest is the API's continuation of it
        rest = httpx.post(f"{url}/v1/completions", json={"model": "cat", "prompt": prompt, "max_tokens": 19,
                                                         "seed": 2, "temperature": 0.8, "logprobs": 0}).json()
        assert ids[5:] == rest["choices"][0]["logprobs"]["token_ids"]
        assert errors == []
    _check_screenshot(shot)


def test_a_conversation_in_a_real_browser(server, tmp_path):
    """A chat run puts the page in chat mode: a message typed and sent gets the run's reply in a bubble, streamed
    with its tokens coloured; a reply token can be looked inside; another run brings the text mode back."""
    url, app = server
    served = app.state.tinygpt.models["chat"]
    with _page(url, tmp_path) as (page, errors):
        page.select_option("#run", "chat")
        assert page.locator("#chat-mode").is_visible() and not page.locator("#prompt").is_visible()
        assert not page.locator("#generate").is_visible() and page.locator("#temperature").input_value() == "0"
        page.fill("#message", "the cat")
        page.press("#message", "Enter")
        page.wait_for_function("document.querySelectorAll('.msg.assistant:not(.pending)').length === 1", timeout=30_000)
        assert page.locator(".msg.user").inner_text() == "the cat" and page.locator("#message").input_value() == ""
        reply = page.locator(".msg.assistant")
        assert reply.inner_text() == _library_reply(app, "the cat", served.details()["default_max_tokens"])
        assert reply.locator(".tok").count() > 0  # token by token, coloured
        reply.locator(".tok").nth(1).click()
        page.wait_for_selector("#attention .head canvas")
        assert page.locator("#saliency .ptok").nth(0).inner_text().startswith("<|user|>")  # it read the template
        shot = tmp_path / "chat.png"
        page.mouse.move(5, 5)  # the hover box away from the conversation
        page.screenshot(path=str(shot), full_page=True)
        page.click("#reset")
        assert page.locator(".msg").count() == 0
        page.select_option("#run", "cat")
        assert page.locator("#prompt").is_visible() and not page.locator("#chat-mode").is_visible()
        assert errors == []
    _check_screenshot(shot)


def test_serve_binds_loopback_by_default():
    from tinygpt.serve.app import bind
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and sock.family == socket.AF_INET
    finally:
        sock.close()
    with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
        taken = bind("127.0.0.1", 0)
        try:
            bind("127.0.0.1", taken.getsockname()[1])
        finally:
            taken.close()


def _colour(css: str) -> tuple[float, float, float]:
    """A computed CSS colour, rgb(...) or rgba(...), as it shows over the page's white (0..255 each)."""
    parts = [float(x) for x in css[css.index("(") + 1:css.index(")")].split(",")]
    alpha = parts[3] if len(parts) == 4 else 1.0
    return tuple(255 + (c - 255) * alpha for c in parts[:3])


def _luminance(rgb) -> float:
    """WCAG 2's relative luminance."""
    lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a, b) -> float:
    """WCAG 2's contrast ratio of two colours, from 1 to 21."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_switching_runs_starts_from_the_new_runs_example(server, tmp_path):
    """The calculator's example does not follow to a text run: no request for an empty prompt, no error, no
    "(not readable by this run)", and an empty output box; the calculator's example comes back with it."""
    url, _ = server
    with _page(url, tmp_path) as (page, errors):
        asked = []
        page.on("request", lambda r: asked.append(json.loads(r.post_data)) if r.url.endswith("/inspect/tokenize")
                else None)
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 4")  # seven times eight =
        assert page.input_value("#prompt") == "seven times eight"
        page.select_option("#run", "cat")
        page.wait_for_timeout(500)  # time for a request, were one made
        assert page.input_value("#prompt") == "" and page.get_attribute("#prompt", "placeholder") == "text to continue"
        assert page.inner_text("#error") == "" and page.inner_text("#tokenization") == ""
        assert page.inner_text("#output").strip() == ""  # not the calculator's "seventimeseight="
        assert all(a["prompt"] != "" for a in asked)
        page.click("#generate")  # nothing to continue: the page says so in its own words, and asks nothing
        assert page.inner_text("#error") == "type some text first: the model continues it"
        page.fill("#prompt", "the mat")
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 7")
        assert page.inner_text("#output").strip() == "the mat"  # the prompt the output will continue
        page.select_option("#run", "calculator")
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 4")
        assert page.input_value("#prompt") == "seven times eight" and page.inner_text("#error") == ""
        page.fill("#prompt", "what is love")  # a question it refuses: the refusal, named as the page's
        page.wait_for_function("document.getElementById('error').textContent !== ''")
        assert page.inner_text("#error").startswith("calculator cannot read this prompt: unknown word 'what'")
        assert page.inner_text("#tokenization") == "(not readable by this run)"
        page.select_option("#run", "cat")
        page.wait_for_timeout(300)
        assert page.inner_text("#error") == "" and page.inner_text("#tokenization") == ""
        shot = tmp_path / "switch.png"
        page.screenshot(path=str(shot), full_page=True)
        assert errors == []
    _check_screenshot(shot)


def test_thumbnails_name_their_tokens_and_coloured_cells_are_readable(server, tmp_path):
    """Every attention thumbnail names the tokens along both axes; the text on the head detail's and the
    saliency's coloured cells reaches WCAG's contrast ratio of 4.5 on its cell, the strongest cells included."""
    url, app = server
    served = app.state.tinygpt.models["calculator"]
    L, H = served.subject.model.attention_layers, served.subject.model.attention_heads
    with _page(url, tmp_path) as (page, errors):
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 4")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('.tok.gen').length > 0 && "
                               "!document.getElementById('generate').disabled", timeout=30_000)
        page.locator(".tok.gen").nth(0).click()
        page.wait_for_selector("#attention .head canvas")
        tokens = page.evaluate("state.inspected.attention.tokens.map(visible)")
        assert tokens == ["seven", "times", "eight", "="]
        heads = page.locator("#attention .head")
        assert heads.count() == L * H == 16
        for n in range(L * H):
            for axis in ("rows", "cols"):
                assert heads.nth(n).locator(f".{axis} span").all_inner_texts() == tokens, (n, axis)
        cells = []
        for n in range(L * H):  # every head's detail, each with its strongest cell at full strength
            heads.nth(n).click()
            cells += page.evaluate("""() => [...document.querySelectorAll('#head-detail .ptok, #saliency .ptok')]
                .map(e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color,
                           getComputedStyle(e.querySelector('small')).color])""")
        assert len(cells) == 16 * (4 + 4)
        for bg, ink, small in cells:
            assert _contrast(_colour(ink), _colour(bg)) >= 4.5, (bg, ink)
            assert _contrast(_colour(small), _colour(bg)) >= 4.5, (bg, small)
        # saturated cells were among them: the strongest blue (luminance 0.23) is where #222 text reads at 4.2
        assert min(_luminance(_colour(bg)) for bg, _, _ in cells) < 0.25
        page.mouse.move(5, 5)
        shot = tmp_path / "head-detail.png"
        page.screenshot(path=str(shot), full_page=True)
        assert errors == []
    _check_screenshot(shot)


def test_a_system_message_that_takes_the_window_is_blamed_in_the_page(server, tmp_path):
    """The refusal names the system message (not the user's words) and what fits; the message stays in its box."""
    url, _ = server
    system = "the cat sat on the mat. the cat sat on the mat. a cat sat on."  # 61 characters
    with _page(url, tmp_path) as (page, errors):
        page.select_option("#run", "chat")
        page.fill("#system", system)
        page.fill("#message", "on the mat")
        page.press("#message", "Enter")
        page.wait_for_function("document.getElementById('error').textContent !== ''", timeout=30_000)
        error = page.inner_text("#error")
        assert error.startswith("the system message leaves no room for this message") and "fewer words" not in error
        assert "shorten the system message to at most 16 tokens" in error
        assert page.input_value("#message") == "on the mat" and page.locator(".msg").count() == 0
        page.fill("#system", system[:16])  # as long as it says fits: answered
        page.press("#message", "Enter")
        page.wait_for_function("document.querySelectorAll('.msg.assistant:not(.pending)').length === 1", timeout=30_000)
        assert page.inner_text("#error") == ""
        page.mouse.move(5, 5)
        shot = tmp_path / "chat-system.png"
        page.screenshot(path=str(shot), full_page=True)
        assert [e for e in errors if "request failed" not in e] == []
    _check_screenshot(shot)


def test_the_page_asks_for_the_api_key_once(server, tmp_path):
    """A server with a key: the page asks for it, says so when it is wrong, and keeps it for the tab's session (a
    reload asks nothing); every request it then makes carries it."""
    url, app = server
    key = "sk-page-7d1e"
    keyed = create_app(app.state.tinygpt.models, api_key=key)
    with running(keyed) as keyed_url, _page(keyed_url, tmp_path, ready="#key-box:not([hidden])") as (page, errors):
        sent = []
        page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
        assert page.locator("#api-key").is_visible() and page.locator("#run option").count() == 0
        page.fill("#api-key", "sk-guess")
        page.press("#api-key", "Enter")
        page.wait_for_function("document.getElementById('key-error').textContent !== ''")
        assert "did not accept that key" in page.inner_text("#key-error") and page.locator("#key-box").is_visible()
        shot = tmp_path / "api-key.png"
        page.screenshot(path=str(shot), full_page=True)
        page.fill("#api-key", key)
        page.click("#key-send")
        page.wait_for_selector("#run option[value=cat]", state="attached")
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 4")
        assert page.locator("#key-box").is_hidden() and page.inner_text("#error") == ""
        asked = [auth for u, auth in sent if "/v1/" in u or "/inspect/" in u]
        assert asked[-1] == f"Bearer {key}"
        sent.clear()
        page.reload()
        page.wait_for_function("document.querySelectorAll('#tokenization .ptok').length === 4")
        assert page.locator("#key-box").is_hidden()  # remembered: not asked again
        assert {auth for u, auth in sent if "/v1/" in u or "/inspect/" in u} == {f"Bearer {key}"}
        assert [e for e in errors if "request failed" not in e] == []
    _check_screenshot(shot)
