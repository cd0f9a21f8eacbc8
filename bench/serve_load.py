"""Load on `tinygpt serve`: 1, 4 and 16 concurrent streaming clients, completions and chat, on the baby model and
on a GPT-2 124M-shaped model; total tokens/s and time to first token, and each level's speed over one stream's.

    python bench/serve_load.py                        # both shapes, random weights, streams 1 4 16
    python bench/serve_load.py --baby runs/baby --baby_chat runs/baby_chat   # trained baby runs instead
    python bench/serve_load.py --tiny                 # a 2-layer toy, a few tokens: checks that the bench runs

The shapes: "baby" is the shakespeare_char preset (6 layers, 6 heads, 384 wide, a 256-token window, a 65-character
vocabulary); "124M" is GPT-2 small (12 layers, 12 heads, 768 wide, a 1024-token window, 50,257 tokens). Unless
runs are given, each shape gets random weights (speed does not depend on what the weights know; say so when
quoting the figures), saved as a text run and a chat run (the same shape with the chat tokens), both served by
one `tinygpt serve` process. Every client streams one reply of --tokens tokens (temperature 0.8, seed = its
number), counting tokens through the log-probabilities, so each token is counted exactly. A trained run's reply
may end early at an end token (the figures count the tokens that were made); a random chat model is kept from
ending its replies (its end tokens' scores are pushed down), so that every stream makes --tokens tokens.

Reported per shape, endpoint and number of streams: tokens, wall time, total tokens/s (all tokens / wall time
from the release of all clients to the last [DONE]), p50 / p95 time to first token (nearest rank: with 16
clients p95 is the slowest), and the speed-up over one stream. The replies of the busiest level are checked
against the same requests sent one at a time (--check, on by default with --tiny): the server batches every
running generation of a model into one forward pass, and a reply must not depend on its neighbours.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab=65),
    "124M": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab=50257),
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab=65),
}
PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"


@dataclass
class Reply:
    text: str = ""
    tokens: int = 0
    ttft: float | None = None  # seconds from sending the request to the first token
    seconds: float = 0.0
    done: bool = False  # the stream ended with [DONE]
    finish_reason: str | None = None  # "stop" or "length", from the last choice chunk
    error: str | None = None
    chunks: list[str] = field(default_factory=list)


def stream_one(client, url: str, path: str, body: dict) -> Reply:
    """One streaming request (a completion or a chat reply), read event by event."""
    reply = Reply()
    t0 = time.perf_counter()
    try:
        with client.stream("POST", f"{url}{path}", json={**body, "stream": True}) as r:
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
                    lp = choice.get("logprobs") or {}
                    n = len(lp.get("token_ids") or lp.get("content") or [])
                    if n and reply.ttft is None:
                        reply.ttft = time.perf_counter() - t0
                    reply.tokens += n
                    reply.text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                    reply.finish_reason = choice.get("finish_reason") or reply.finish_reason
    except Exception as e:  # a bench reports every failure instead of stopping at the first
        reply.error = f"{type(e).__name__}: {e}"
    reply.seconds = time.perf_counter() - t0
    if reply.error is None and not reply.done:
        reply.error = "the stream ended without [DONE]"
    return reply


def run_clients(url: str, path: str, bodies: list[dict], timeout: float = 1800.0) -> tuple[list[Reply], float]:
    """Send every body at once, one thread each; (replies in order, wall seconds from release to the last)."""
    import httpx

    replies: list[Reply | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies) + 1)

    def client(i: int) -> None:
        with httpx.Client(timeout=timeout) as c:
            start.wait()
            replies[i] = stream_one(c, url, path, bodies[i])

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
    return {"streams": len(replies), "errors": sum(r.error is not None for r in replies), "tokens": tokens,
            "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "ttft_p50_ms": round(1000 * percentile(ttfts, 50), 1) if ttfts else None,
            "ttft_p95_ms": round(1000 * percentile(ttfts, 95), 1) if ttfts else None}


def random_runs(shape: str, root: Path) -> tuple[Path, Path]:
    """A text run and a chat run of `shape` with random weights (seeded), written as checkpoints."""
    import torch

    from tinygpt.config import ModelConfig
    from tinygpt.models import build_model
    from tinygpt.tokenizers import CharTokenizer
    from tinygpt.tokenizers.chat import SPECIALS, ChatTokenizer
    from tinygpt.training.checkpoint import save_checkpoint

    s = SHAPES[shape]
    ascii_chars = [chr(c) for c in range(32, 127)] + ["\n"]
    extra = (chr(c) for c in range(0x10000, 0x10000 + s["vocab"]))  # characters past the first plane fill it

    def chars(n: int) -> list[str]:  # n characters, the ASCII ones first
        return (ascii_chars + list(extra))[:n] if n > len(ascii_chars) else ascii_chars[:n]

    runs = []
    for name, tok in (("text", CharTokenizer(chars(s["vocab"] - 1))),
                      ("chat", ChatTokenizer(CharTokenizer(chars(s["vocab"] - 1 - len(SPECIALS)))))):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=s["block_size"], n_layer=s["n_layer"],
                          n_head=s["n_head"], n_embd=s["n_embd"])
        model = build_model(cfg).eval()
        if isinstance(tok, ChatTokenizer):  # keep a random chat model from ending its reply at once:
            with torch.no_grad():  # the final norm's output is zero-mean plus its bias, so with a bias of ones
                model.transformer.ln_f.bias.fill_(1.0)  # and all -1 output rows, an end token scores -n_embd
                model.lm_head.weight[list(tok.special_ids.values())] = -1.0
        run = root / f"{shape}_{name}"
        save_checkpoint(run / "best", model, tok, {"step": 0})
        runs.append(run)
    return runs[0], runs[1]


def start_server(runs: list[Path], streams: int) -> tuple[subprocess.Popen, str]:
    """`tinygpt serve RUNS --port 0` in its own process; (process, URL) once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "serve", *map(str, runs), "--port", "0",
                             "--parallel", str(max(streams, 1)), "--max_tokens", "100000"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:
        if line.startswith("open http"):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe from filling
            return proc, line.split()[1]
    proc.wait()
    raise SystemExit(f"the server did not start (exit code {proc.returncode})")


def bodies(endpoint: str, model: str, n: int, tokens: int) -> list[dict]:
    common = {"model": model, "max_tokens": tokens, "temperature": 0.8}
    if endpoint == "completions":
        return [{**common, "prompt": PROMPT, "seed": i + 1, "logprobs": 0} for i in range(n)]
    return [{**common, "messages": [{"role": "user", "content": PROMPT}], "seed": i + 1, "logprobs": True}
            for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["baby", "124M"], choices=sorted(SHAPES))
    ap.add_argument("--baby", help="a trained text run to use for the baby shape (default: random weights)")
    ap.add_argument("--baby_chat", help="a trained chat run to use for the baby shape (default: random weights)")
    ap.add_argument("--streams", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per stream")
    ap.add_argument("--check", action="store_true", help="check the busiest level's replies against one at a time")
    ap.add_argument("--tiny", action="store_true", help="the tiny shape, 8 tokens, streams 1 2: a quick check")
    args = ap.parse_args()
    if args.tiny:
        args.shapes, args.tokens, args.streams, args.check = ["tiny"], 8, [1, 2], True

    import torch  # imported here: --help and argument errors need neither torch nor the library
    from machine import cpu_name
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; weights: "
          f"{'trained baby runs' if args.baby else 'random'} (speed does not depend on them)", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            if shape == "baby" and args.baby and args.baby_chat:
                text_run, chat_run = Path(args.baby), Path(args.baby_chat)
            else:
                text_run, chat_run = random_runs(shape, Path(tmp))
            proc, url = start_server([text_run, chat_run], max(args.streams))
            try:
                for endpoint, run, path in (("completions", text_run, "/v1/completions"),
                                            ("chat", chat_run, "/v1/chat/completions")):
                    name = run.resolve().name if run.resolve().name not in ("best", "latest") else run.parent.name
                    run_clients(url, path, bodies(endpoint, name, 1, 4))  # warm-up: first-call costs
                    base = None
                    for n in args.streams:
                        sent = bodies(endpoint, name, n, args.tokens)
                        replies, wall = run_clients(url, path, sent)
                        row = {"shape": shape, "endpoint": endpoint, **summarize(replies, wall)}
                        base = base or row["tokens_per_s"]
                        row["speedup"] = round(row["tokens_per_s"] / base, 2) if base and row["tokens_per_s"] else None
                        if args.check and n == max(args.streams):
                            alone = [run_clients(url, path, [b])[0][0] for b in sent]
                            row["equal_to_alone"] = sum(a.error is None and a.text == r.text
                                                        for a, r in zip(alone, replies))
                        for r in replies:
                            if r.error:
                                print(f"error: {r.error}", file=sys.stderr)
                        results.append(row)
                        print(json.dumps(row), flush=True)
            finally:
                proc.terminate()
                proc.wait(10)
    print("\nshape  endpoint     streams  tokens/s  ×1 stream  ttft p50 ms  ttft p95 ms")
    for r in results:
        cells = [str(r[k]) if r[k] is not None else "-" for k in ("tokens_per_s", "speedup", "ttft_p50_ms",
                                                                     "ttft_p95_ms")]
        print(f"{r['shape']:<6} {r['endpoint']:<12} {r['streams']:>7}  {cells[0]:>8}  {cells[1]:>9}  "
              f"{cells[2]:>11}  {cells[3]:>11}")
    failed = any(r["errors"] for r in results) or any(r.get("equal_to_alone", r["streams"]) != r["streams"]
                                                      for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
