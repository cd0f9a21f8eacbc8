"""The web app of `tinygpt serve`: an OpenAI-compatible API, the inspection endpoints, and the page that uses them.

    GET  /                      the page (serve/web/, served from the package: no network needed)
    GET  /health                {"status": "ok", "models": [...], "scheduler": {running, waiting, ...}}
    GET  /v1/models[/{id}]      the served models, OpenAI's shape (tinygpt's details under "tinygpt")
    POST /v1/completions        OpenAI's completions, streaming (server-sent events, then `data: [DONE]`) or not
    POST /v1/chat/completions   OpenAI's chat completions, for chat runs (a tokenizer with the chat template's
                                tokens); any other model is refused with a 400 that says so
    POST /inspect/tokenize      {"model", "prompt"} -> the ids the model reads, and their pieces (none for "")
    POST /inspect/step          {"model", "prompt", "tokens", "token", sampling} -> candidates before and
                                after the settings, attention, logit lens and saliency (playground.step)

A chat request is answered as `tinygpt chat` answers (completions.chat_prompt): the messages rendered by the
template, the oldest exchanges dropped until the history and room for the reply fit the model's window (how
many: "dropped_messages" under "tinygpt" in the response, and the x-tinygpt-dropped-messages header), the reply
greedy unless a temperature is given, ended at <|end|>. Both endpoints share one path: `complete` generates,
replies.py's `Reply` (or `ChatReply`) writes OpenAI's shapes.

Every model call runs on the scheduler's worker thread (scheduler.py), never on the event loop: requests are
interleaved fairly, a full queue is a 503, and a client that goes away stops its generation. Every refusal is
a 4xx JSON error in OpenAI's shape with a one-line message (api.py); no traceback ever reaches a client. The
server reads no path a client sends: models are looked up by name among those loaded at start, and the page's
files by a fixed table.

Who may ask (access.py): a request whose Host header is not one of the server's names is refused with a 403
(a web page elsewhere cannot reach a loopback server by DNS rebinding); with an API key, every request but the
page's own files and /health needs `Authorization: Bearer KEY`, else a 401 in OpenAI's shape. The gate runs
before any route.

Needs the `web` extra (Starlette and uvicorn), imported here only, so the rest of tinygpt does without them.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

try:
    from starlette.applications import Starlette
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError:  # pragma: no cover - the message names the extra
    raise ImportError("tinygpt serve needs the web extra: pip install 'tinygpt[web]'", name="starlette") from None

from tinygpt.serve import access, api, playground
from tinygpt.serve.api import APIError, Limits
from tinygpt.serve.completions import ServedModel, chat_prompt, complete, load_models, prompt_ids
from tinygpt.serve.replies import ChatReply, Reply, client_error
from tinygpt.serve.scheduler import Busy, Job, Scheduler

# the page's files: name -> media type; nothing else is ever read from disk
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
INSPECT_FIELDS = ("model", "prompt", "tokens", "token", "temperature", "top_k", "top_p")
OPEN_PATHS = ("/", "/health")  # with /static/*: what a request without the API key may get (the page asks for it)


class App:
    """The served models, the limits and the scheduler, and the request handlers that use them."""

    def __init__(self, models: dict[str, ServedModel], limits: Limits | None = None, max_running: int = 16,
                 max_waiting: int = 64):
        self.models = models
        self.limits = limits or Limits()
        self.scheduler = Scheduler(max_running, max_waiting)

    # --- helpers -----------------------------------------------------------------------------------
    def served(self, name: str) -> ServedModel:
        if name not in self.models:
            raise APIError(404, f"the model {name!r} does not exist here; this server has "
                                f"{', '.join(sorted(self.models))}", param="model", code="model_not_found")
        return self.models[name]

    async def body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object, read at most limits.max_body bytes far."""
        limit = self.limits.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body is larger than this server's limit of {limit:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"the request body is larger than this server's limit of {limit:,} bytes")
            chunks.append(chunk)
        return api.parse_json(b"".join(chunks))

    def submit(self, steps: Iterator[Any]) -> Job:
        try:
            return self.scheduler.submit(steps)
        except Busy as e:
            raise APIError(503, str(e), code="server_busy") from None

    # --- routes ------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in PAGE_FILES:
            raise HTTPException(404)
        data = resources.files("tinygpt.serve").joinpath("web", name).read_bytes()
        return Response(data, media_type=PAGE_FILES[name], headers={"cache-control": "no-cache"})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": sorted(self.models), "scheduler": self.scheduler.stats()})

    async def model_cards(self, request: Request) -> Response:
        name = request.path_params.get("name")
        if name is not None:
            return JSONResponse(self.card(self.served(name)))
        return JSONResponse({"object": "list", "data": [self.card(m) for m in self.models.values()]})

    def card(self, served: ServedModel) -> dict[str, Any]:
        return api.model_card(served.name, served.created, {**served.details(), "max_tokens": self.limits.max_tokens})

    async def chat(self, request: Request) -> Response:
        req = api.parse_chat(await self.body(request), self.limits)
        served = self.served(req.model)
        if not served.chat:
            raise APIError(400, f"this run is not a chat model: {served.name} is a {served.kind} run; use "
                                f"/v1/completions", param="model", code="not_a_chat_model")
        prompt = chat_prompt(served, req.messages,
                             req.sampling.max_tokens or min(served.default_max_tokens, self.limits.max_tokens))
        reply = ChatReply(served, prompt, req.logprobs)
        return await self._generate(request, served, prompt.ids, req.sampling, prompt.max_tokens,
                                    req.top_logprobs if req.logprobs else None, reply)

    async def completions(self, request: Request) -> Response:
        req = api.parse_completion(await self.body(request), self.limits)
        served = self.served(req.model)
        ids = prompt_ids(served, req.prompt)
        return await self._generate(request, served, ids, req.sampling,
                                    req.sampling.max_tokens or served.default_max_tokens, req.logprobs,
                                    Reply(served, len(ids), req.logprobs is not None))

    async def _generate(self, request: Request, served: ServedModel, ids: list[int], s: api.Sampling,
                        max_tokens: int, logprobs: int | None, reply: Reply) -> Response:
        """The n generations of a request on the worker, answered by `reply` whole or streamed."""
        settings = dict(max_tokens=max_tokens, top_k=s.top_k, top_p=s.top_p, stop=s.stop, logprobs=logprobs,
                        temperature=served.default_temperature if s.temperature is None else s.temperature,
                        **s.penalties())  # only those switched on
        jobs: list[Job] = []
        try:
            for i in range(s.n):  # choice i samples with seed + i, as `tinygpt sample --num_samples`
                seed = None if s.seed is None else (s.seed + i) % (api.MAX_SEED + 1)
                jobs.append(self.submit(complete(served, ids, seed=seed, **settings)))
        except APIError:
            for job in jobs:
                job.cancel()
            raise
        if s.stream:
            return StreamingResponse(reply.stream(jobs, s.include_usage), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no", **reply.headers})
        results = await _unless_disconnected(request, asyncio.gather(*(job.result() for job in jobs)), jobs)
        return JSONResponse(reply.whole(results), headers=reply.headers)

    async def tokenize(self, request: Request) -> Response:
        body = await self.body(request)
        f = api.Fields(body, ("model", "prompt"))
        served = self.served(api.model_field(f))
        text = body.get("prompt")
        if not isinstance(text, str):
            raise APIError(400, "prompt must be a string", param="prompt")
        if text == "":  # nothing typed yet: nothing to read
            return JSONResponse({"ids": [], "tokens": [], "texts": [], "notices": []})
        api.parse_prompt(text, self.limits)
        return JSONResponse(await self._once(request, lambda: playground.tokenize(served, text)))

    async def inspect_step(self, request: Request) -> Response:
        body = await self.body(request)
        f = api.Fields(body, INSPECT_FIELDS)
        served = self.served(api.model_field(f))
        ids = prompt_ids(served, api.parse_prompt(body.get("prompt"), self.limits))
        vocab = served.subject.model.config.vocab_size
        tokens = body.get("tokens") or []
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab
                                                   for t in tokens):
            raise APIError(400, f"tokens must be an array of ids of {served.name}'s vocabulary (0..{vocab - 1})",
                           param="tokens")
        if len(tokens) > self.limits.max_tokens:
            raise APIError(400, f"tokens has {len(tokens)} ids; this server generates at most "
                                f"{self.limits.max_tokens}", param="tokens")
        token = f.integer("token", 0, vocab - 1)
        temperature = f.number("temperature", 0.0, 2.0)
        temperature = served.default_temperature if temperature is None else temperature
        top_k, top_p = f.integer("top_k", 1, 1 << 31), f.number("top_p", 0.0, 1.0, open_low=True)
        return JSONResponse(await self._once(request, lambda: playground.step(
            served, ids, tokens, token, temperature, top_k, top_p)))

    async def _once(self, request: Request, fn: Callable[[], Any]) -> Any:
        """Run one model call on the worker and return its result."""
        job = self.submit(_call(fn))
        (result,) = await _unless_disconnected(request, job.result(), [job])
        return result

    def routes(self) -> list[Route]:
        def post(path: str, endpoint: Callable) -> Route:
            return Route(path, _guarded(endpoint), methods=["POST"])

        return [Route("/", _guarded(self.page)), Route("/static/{name}", _guarded(self.page)),
                Route("/health", _guarded(self.health)), Route("/v1/models", _guarded(self.model_cards)),
                Route("/v1/models/{name:path}", _guarded(self.model_cards)),
                post("/v1/completions", self.completions), post("/v1/chat/completions", self.chat),
                post("/inspect/tokenize", self.tokenize), post("/inspect/step", self.inspect_step)]


def _guarded(endpoint: Callable) -> Callable:
    """An endpoint whose every failure becomes a JSON error response (never a traceback to the client)."""
    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except _Gone:
            return Response(status_code=499)  # the client is gone: nobody reads this
        except HTTPException:
            raise
        except Exception as e:
            err = client_error(e)
            return JSONResponse(err.body(), status_code=err.status)
    return handle


def _call(fn: Callable[[], Any]) -> Iterator[Any]:
    yield fn()


async def _unless_disconnected(request: Request, work: Any, jobs: Sequence[Job]) -> Any:
    """Await `work`; if the client goes away first, cancel the jobs (their generation stops) and give up."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        for job in jobs:
            job.cancel()
        work.cancel()
        raise _Gone()
    finally:
        watcher.cancel()


class _Gone(Exception):
    """The client disconnected before its answer was ready: nothing to send."""


async def _on_error(request: Request, exc: Exception) -> Response:
    """Errors outside the endpoints (no such path, wrong method, anything unforeseen) in the same JSON shape."""
    if isinstance(exc, HTTPException):
        detail = str(exc.detail).lower() if exc.status_code in (404, 405) else str(exc.detail)
        err = APIError(exc.status_code, f"{request.method} {request.url.path}: {detail}")
    else:
        err = client_error(exc)
    return JSONResponse(err.body(), status_code=err.status)


class _Gate:
    """ASGI middleware in front of every route: the Host check, then the API key (see access.py)."""

    def __init__(self, app: Any, names: frozenset[str], api_key: str | None):
        self.app, self.names, self.api_key = app, names, api_key

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: dict) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not access.host_allowed(host, self.names):
            err = APIError(403, str(access.host_refusal(host, self.names)), code="host_not_allowed")
            return JSONResponse(err.body(), status_code=err.status)
        path = scope["path"]
        if self.api_key is None or path in OPEN_PATHS or path.startswith("/static/"):
            return None
        authorization = headers.get("authorization")
        if access.key_matches(authorization, self.api_key):
            return None
        err = APIError(401, access.key_refusal(authorization), code="invalid_api_key")
        return JSONResponse(err.body(), status_code=401, headers={"www-authenticate": "Bearer"})


def create_app(runs: Sequence[str | Path] | dict[str, ServedModel], which: str = "best", device: str = "cpu",
               limits: Limits | None = None, max_running: int = 16, max_waiting: int = 64,
               api_key: str | None = None, hosts: Sequence[str] = ()) -> Starlette:
    """The ASGI app serving `runs` (run directories, each loaded once; or the models load_models made of them).
    app.state.tinygpt is the App (its scheduler, its models).

    api_key: the key every request but the page's files and /health must send (`Authorization: Bearer KEY`);
    None: no key. hosts: names the server answers to besides localhost and IP addresses (the host it listens on
    when given by name, and any more; "*": every name)."""
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key must not be empty (None means no key)")
    api_key = api_key.strip() if api_key is not None else None  # as clients' keys are read (a key file's newline)
    loaded = runs if isinstance(runs, dict) else load_models(runs, which, device)
    state = App(loaded, limits, max_running, max_waiting)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.scheduler.close()

    handlers = {HTTPException: _on_error, Exception: _on_error}
    gate = Middleware(_Gate, names=access.server_names(hosts), api_key=api_key)
    app = Starlette(routes=state.routes(), exception_handlers=handlers, lifespan=lifespan, middleware=[gate])
    app.state.tinygpt = state
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one). An address in use is a one-line OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _server(app: Starlette) -> Any:
    import uvicorn  # the web extra, imported where it is used
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def serve(app: Starlette, host: str = "127.0.0.1", port: int = 8000,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the app until Ctrl-C / SIGTERM; ready(url) is called once it listens."""
    sock = bind(host, port)
    server = _server(app)
    if ready is not None:
        ready(url_of(sock))
    server.run(sockets=[sock])


@contextlib.contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the app from a background thread for the duration of a `with` block; yields its URL (tests,
    benchmarks, notebooks)."""
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tinygpt-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            threading.Event().wait(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


__all__ = ["PAGE_FILES", "App", "create_app", "bind", "url_of", "serve", "running"]
