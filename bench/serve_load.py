"""Load on `tinygpt serve`: N concurrent streaming clients on loopback; aggregate tokens/s, time to first token.

    python bench/serve_load.py RUN [--clients 16] [--tokens 200] [--url http://127.0.0.1:8000]

Starts `tinygpt serve RUN --port 0` in its own process (or uses --url), then N client threads, released
together, each stream one completion with `logprobs: 0` (so every token is counted exactly). A text run
gets one prompt sampled with seeds 1..N; a task run (the calculator) gets N different held-out questions.
Every reply is then checked against the library in this process: the same text as `generate_text` with that
seed, or as `task.answer` (and, for the calculator, how many answers are right).

Reported: clients, errors, tokens, wall time, aggregate tokens/s (all tokens / wall time from release to the
last [DONE]), and p50 / p95 time to first token (nearest rank: with 16 clients p95 is the slowest).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Reply:
    text: str = ""
    tokens: int = 0
    ttft: float | None = None  # seconds from sending the request to the first token
    seconds: float = 0.0
    finish_reason: str | None = None
    done: bool = False  # the stream ended with [DONE]
    error: str | None = None
    events: list[str] = field(default_factory=list)


def stream_one(client, url: str, body: dict) -> Reply:
    """One streaming completion, read event by event."""
    reply = Reply()
    t0 = time.perf_counter()
    try:
        with client.stream("POST", f"{url}/v1/completions", json={**body, "stream": True, "logprobs": 0}) as r:
            if r.status_code != 200:
                r.read()
                reply.error = f"{r.status_code}: {r.text}"
                return reply
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    reply.done = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    reply.error = chunk["error"]["message"]
                    continue
                for choice in chunk["choices"]:
                    lp = choice.get("logprobs")
                    n = len(lp["token_ids"]) if lp else 0
                    if n and reply.ttft is None:
                        reply.ttft = time.perf_counter() - t0
                    reply.tokens += n
                    reply.text += choice["text"]
                    reply.finish_reason = choice["finish_reason"] or reply.finish_reason
    except Exception as e:  # a bench reports every failure instead of stopping at the first
        reply.error = f"{type(e).__name__}: {e}"
    reply.seconds = time.perf_counter() - t0
    if reply.error is None and not reply.done:
        reply.error = "the stream ended without [DONE]"
    return reply


def run_clients(url: str, bodies: list[dict], timeout: float = 300.0) -> tuple[list[Reply], float]:
    """Send every body at once, one thread each; (replies in order, wall seconds from release to the last)."""
    import httpx

    replies: list[Reply | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies) + 1)

    def client(i: int) -> None:
        with httpx.Client(timeout=timeout) as c:
            start.wait()
            replies[i] = stream_one(c, url, bodies[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout)
    return [r or Reply(error="no reply") for r in replies], time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: percentile([1, 2, 3, 4], 50) == 2."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(replies: list[Reply], wall: float) -> dict:
    ttfts = [r.ttft for r in replies if r.ttft is not None]
    tokens = sum(r.tokens for r in replies)
    return {"clients": len(replies), "errors": sum(r.error is not None for r in replies), "tokens": tokens,
            "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "ttft_p50_ms": round(1000 * percentile(ttfts, 50), 1) if ttfts else None,
            "ttft_p95_ms": round(1000 * percentile(ttfts, 95), 1) if ttfts else None}


def requests_for(run_dir: str, clients: int, tokens: int, prompt: str) -> tuple[list[dict], list[str], list]:
    """The request bodies, the library's reply to each, and for a task run the true answers."""
    from tinygpt.serve.completions import load_models
    from tinygpt.generation.generate import generate_text
    from tinygpt.tasks.calculator import number_to_words

    (served,) = load_models([run_dir]).values()
    model, tok, task = served.subject.model, served.subject.tokenizer, served.subject.task
    if task is not None:
        problems = [p for ps in task.splits["val"].values() for p in ps]
        chosen = [problems[i * len(problems) // clients] for i in range(clients)]
        bodies = [{"model": served.name, "prompt": p.question} for p in chosen]
        expected = [task.answer(model, p.question) for p in chosen]
        return bodies, expected, [number_to_words(p.answer) for p in chosen]
    bodies = [{"model": served.name, "prompt": prompt, "max_tokens": tokens, "seed": i + 1, "temperature": 0.8}
              for i in range(clients)]
    expected = ["".join(generate_text(model, tok, prompt, tokens, eos_ids=served.eos_ids, temperature=0.8, seed=i + 1))
                for i in range(clients)]
    return bodies, expected, []


def start_server(run_dir: str) -> tuple[subprocess.Popen, str]:
    """`tinygpt serve RUN --port 0` in its own process; (process, URL) once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "serve", run_dir, "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:
        if line.startswith("open http"):
            return proc, line.split()[1]
    proc.wait()
    raise SystemExit(f"the server did not start (exit code {proc.returncode})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="the run directory to serve and load")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per client (text runs)")
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--url", help="an already running server (default: start one)")
    args = ap.parse_args()

    bodies, expected, truth = requests_for(args.run, args.clients, args.tokens, args.prompt)
    proc, url = (None, args.url) if args.url else start_server(args.run)
    try:
        replies, wall = run_clients(url, bodies)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    summary = summarize(replies, wall)
    summary["equal_to_library"] = sum(r.error is None and r.text == e for r, e in zip(replies, expected))
    if truth:
        summary["right_answers"] = sum(r.text == t for r, t in zip(replies, truth))
    for r in replies:
        if r.error:
            print(f"error: {r.error}", file=sys.stderr)
    print(json.dumps(summary))
    return 0 if summary["errors"] == 0 and summary["equal_to_library"] == len(replies) else 1


if __name__ == "__main__":
    sys.exit(main())
