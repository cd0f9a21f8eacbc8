"""Who may use `tinygpt serve`: the API key (a Bearer token, as OpenAI's clients send it; a 401 in OpenAI's shape
without it) and the Host check (a name the server does not answer to is refused, so a web page elsewhere cannot
reach a loopback server through DNS rebinding)."""
from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from serve_runs import shared_runs  # noqa: E402
from tinygpt.serve import access  # noqa: E402
from tinygpt.serve.app import create_app  # noqa: E402

KEY = "sk-local-3f9a2c"
COMPLETION = {"model": "cat", "prompt": "the cat", "max_tokens": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def models(runs):
    return create_app([runs["cat"]]).state.tinygpt.models  # loaded once, served by each app below


def _client(models, **kw) -> TestClient:
    return TestClient(create_app(models, **kw), base_url="http://localhost")


def test_host_names():
    assert access.host_name("[::1]:8000") == "::1" and access.host_name("::1") == "::1"
    assert access.host_name("LocalHost:80") == "localhost" and access.host_name("localhost.") == "localhost"
    assert access.host_name("127.0.0.1:8000") == "127.0.0.1" and access.host_name("box.lan") == "box.lan"
    names = access.server_names(["Box.lan:80", ""])
    assert names == {"localhost", "box.lan"}
    for ok in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.0.0.7", "box.lan:9000", "LOCALHOST"):
        assert access.host_allowed(ok, names), ok
    for refused in ("evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io", "", None):
        assert not access.host_allowed(refused, names), refused
    assert access.host_allowed("anything.example", access.server_names(["*"]))


def test_keys_are_bearer_tokens_compared_in_constant_time(monkeypatch):
    assert access.key_matches(f"Bearer {KEY}", KEY) and access.key_matches(f"bearer  {KEY} ", KEY)
    for wrong in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer "):
        assert not access.key_matches(wrong, KEY), wrong
    compared = []
    real = access.hmac.compare_digest
    monkeypatch.setattr(access.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert not access.key_matches("Bearer guess", KEY)
    assert compared == [(b"guess", KEY.encode())]  # hmac's comparison: its time does not tell where they differ


def test_without_the_key_every_model_route_is_a_401_in_openais_shape(models):
    with _client(models, api_key=KEY) as c:
        for method, path, body in (("get", "/v1/models", None), ("get", "/v1/models/cat", None),
                                   ("post", "/v1/completions", COMPLETION),
                                   ("post", "/v1/chat/completions", {"model": "cat", "messages": []}),
                                   ("post", "/inspect/tokenize", {"model": "cat", "prompt": "the"}),
                                   ("post", "/inspect/step", {"model": "cat", "prompt": "the"}),
                                   ("get", "/v2/nothing", None)):
            for headers, words in (({}, "this server needs an API key"),
                                   ({"authorization": "Bearer wrong"}, "the API key given is not this server's"),
                                   ({"authorization": KEY}, "the API key given is not this server's")):
                r = getattr(c, method)(path, headers=headers, **({} if body is None else {"json": body}))
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"} and words in err["message"]
                assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
        # the page (which then asks for the key) and the health check need no key
        for path in ("/", "/static/app.js", "/static/style.css", "/health"):
            assert c.get(path).status_code == 200, path
        auth = {"authorization": f"Bearer {KEY}"}
        assert c.get("/v1/models", headers=auth).json()["data"][0]["id"] == "cat"
        r = c.post("/v1/completions", json=COMPLETION, headers=auth)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        assert c.post("/inspect/tokenize", json={"model": "cat", "prompt": "the"}, headers=auth).json()["ids"]


def test_without_a_key_nothing_asks_for_one(models):
    with _client(models) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/completions", json=COMPLETION, headers={"authorization": "Bearer any"}).status_code == 200
    with pytest.raises(ValueError, match="api_key must not be empty"):
        create_app(models, api_key=" ")


def test_the_openai_client_sends_the_key(models):
    openai = pytest.importorskip("openai")
    with _client(models, api_key=KEY) as http:
        client = openai.OpenAI(base_url="http://localhost/v1", api_key=KEY, http_client=http, max_retries=0)
        assert [m.id for m in client.models.list()] == ["cat"]
        done = client.completions.create(model="cat", prompt="the cat", max_tokens=2)
        assert done.usage.completion_tokens == 2
        wrong = openai.OpenAI(base_url="http://localhost/v1", api_key="sk-guess", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="the API key given is not this server's") as e:
            wrong.completions.create(model="cat", prompt="the cat", max_tokens=2)
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"


def test_a_name_the_server_does_not_answer_to_is_refused(models):
    """DNS rebinding: a page at evil.example whose name now points at 127.0.0.1 sends `Host: evil.example`."""
    with _client(models) as c:
        for host in ("evil.example", "evil.example:8000", "localhost.evil.example"):
            for path in ("/", "/v1/models", "/health"):
                r = c.get(path, headers={"host": host})
                assert r.status_code == 403, (host, path)
                err = r.json()["error"]
                assert err["code"] == "host_not_allowed" and set(err) == {"message", "type", "param", "code"}
                assert f"does not answer to the name {access.host_name(host)!r}" in err["message"]
                assert "allowed_host" in err["message"] and "\n" not in err["message"]
            assert c.post("/v1/completions", json=COMPLETION, headers={"host": host}).status_code == 403
        for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "192.168.1.9:8000"):
            assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
    with _client(models, hosts=["0.0.0.0", "box.lan"]) as c:  # the listening host and names the operator allows
        assert c.get("/v1/models", headers={"host": "box.lan:8000"}).status_code == 200
        assert c.get("/v1/models", headers={"host": "evil.example"}).status_code == 403
    with _client(models, hosts=["*"]) as c:
        assert c.get("/v1/models", headers={"host": "evil.example"}).status_code == 200
    with _client(models, api_key=KEY) as c:  # the Host check comes first: no hint about the key to a stranger
        assert c.get("/v1/models", headers={"host": "evil.example"}).status_code == 403


def test_serve_cli_takes_the_key_and_the_names(cli, runs, monkeypatch):
    import tinygpt.serve.app as serve_mod

    made = []
    real = serve_mod.create_app
    monkeypatch.setattr(serve_mod, "create_app", lambda *a, **kw: made.append(kw) or real(*a, **kw))
    monkeypatch.setattr(serve_mod, "serve", lambda app, host, port, ready: ready(f"http://{host}:{port}"))
    monkeypatch.delenv("TINYGPT_API_KEY", raising=False)
    code, _, err = cli("serve", runs["cat"], "--port", "0")
    assert code == 0 and made[-1]["api_key"] is None and made[-1]["hosts"] == ["127.0.0.1"]
    code, _, err = cli("serve", runs["cat"], "--api_key", KEY, "--allowed_host", "box.lan", "--allowed_host", "b2")
    assert code == 0 and made[-1]["api_key"] == KEY and made[-1]["hosts"] == ["127.0.0.1", "box.lan", "b2"]
    assert "clients send the API key as 'Authorization: Bearer KEY'" in err and KEY not in err
    monkeypatch.setenv("TINYGPT_API_KEY", "from-the-environment")
    code, _, err = cli("serve", runs["cat"])
    assert code == 0 and made[-1]["api_key"] == "from-the-environment"
    code, _, err = cli("serve", runs["cat"], "--api_key", KEY)  # the flag wins
    assert code == 0 and made[-1]["api_key"] == KEY
    code, _, err = cli("serve", runs["cat"], "--host", "0.0.0.0")  # reachable, with a key: a note about TLS
    assert code == 0 and err.startswith("note: listening on 0.0.0.0 over plain HTTP") and "warning" not in err
    monkeypatch.delenv("TINYGPT_API_KEY")
    code, _, err = cli("serve", runs["cat"], "--host", "0.0.0.0")
    assert code == 0 and err.startswith("warning: listening on 0.0.0.0: anyone who can reach this machine")
    assert "--api_key" in err


def test_a_key_read_from_a_file_with_its_newline_is_the_key():
    """create_app reads a key as clients' keys are read: surrounding blanks are not part of it."""
    from starlette.testclient import TestClient

    from tinygpt.serve.app import create_app

    with TestClient(create_app({}, api_key="sk-file-key\n"), base_url="http://localhost") as c:
        assert c.get("/v1/models", headers={"authorization": "Bearer sk-file-key"}).status_code == 200
        assert c.get("/v1/models", headers={"authorization": "Bearer sk-other"}).status_code == 401
