"""The `tinygpt serve` subcommand: parse, warn about a non-loopback address, call serve/app.py."""
from __future__ import annotations

import argparse
import os
import sys

from tinygpt.cli.args import add_model_flags, nonneg_int, positive_int
from tinygpt.device import choose_device
from tinygpt.serve.api import Limits
from tinygpt.serve.completions import load_models

API_KEY_ENV = "TINYGPT_API_KEY"  # where --api_key is read from when not given (a flag shows in the process list)


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = Limits()
    p = subparsers.add_parser(
        "serve", help="a live playground and inspector in the browser, and an OpenAI-compatible API",
        description="Serve runs over HTTP: the page at /, OpenAI's /v1/completions and, for chat runs, "
                    "/v1/chat/completions (streaming or not), /v1/models, and the inspection endpoints the page "
                    "uses. Needs the web extra: pip install 'tinygpt[web]'.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (each served under its directory's name)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another address is "
                        "reachable from the network and prints a warning)")
    p.add_argument("--port", type=nonneg_int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_model_flags(p, device="cpu")
    p.add_argument("--max_tokens", type=positive_int, default=d.max_tokens,
                   help=f"the most new tokens a request may ask for, per choice (default {d.max_tokens})")
    p.add_argument("--max_prompt", type=positive_int, default=d.max_prompt,
                   help=f"the longest prompt taken, in characters (or tokens, given as ids) (default {d.max_prompt})")
    p.add_argument("--max_n", type=positive_int, default=d.max_n,
                   help=f"the most choices (n) one request may ask for (default {d.max_n})")
    p.add_argument("--parallel", type=positive_int, default=16,
                   help="requests generated at once, a step each in turn (default 16)")
    p.add_argument("--queue", type=nonneg_int, default=64,
                   help="requests that may wait beyond those; one more gets a 503 (default 64)")
    p.add_argument("--api_key", default=None, metavar="KEY",
                   help=f"a key every client must send (OpenAI clients: their api_key; others: the header "
                        f"'Authorization: Bearer KEY'); the page asks for it once. Default: ${API_KEY_ENV} if set "
                        f"(better than this flag, which other users of the machine can see), else no key")
    p.add_argument("--allowed_host", action="append", default=[], metavar="NAME",
                   help="a name this server may be reached by, besides localhost, --host and IP addresses "
                        "(repeatable; '*' for any name, behind a proxy that checks names): other names are "
                        "refused, so a web page elsewhere cannot reach the server through DNS rebinding")
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    from tinygpt.serve.access import is_loopback
    from tinygpt.serve.app import create_app, serve  # needs the web extra (starlette, uvicorn)

    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    key = key.strip() if key and key.strip() else None
    if not is_loopback(args.host) and key is None:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the models "
              f"(there is no authentication); use --host 127.0.0.1 to keep it local, or give an --api_key",
              file=sys.stderr)
    elif not is_loopback(args.host):
        print(f"note: listening on {args.host} over plain HTTP: the API key and every prompt and reply cross the "
              f"network unencrypted; beyond a trusted network, put a TLS proxy in front", file=sys.stderr)
    limits = Limits(max_tokens=args.max_tokens, max_prompt=args.max_prompt, max_n=args.max_n)
    device = str(choose_device(args.device))
    runs = load_models(args.runs, args.checkpoint, device, quantize=args.quantize)
    app = create_app(runs, args.checkpoint, device, limits, args.parallel, args.queue, api_key=key,
                     hosts=[args.host, *args.allowed_host])
    models = app.state.tinygpt.models

    def ready(url: str) -> None:
        for served in models.values():
            d = served.details()
            print(f"serving {served.name}: a {d['kind']} run, {d['model']} with {d['n_layer']} layer(s), "
                  f"{d['tokenizer']} tokenizer ({served.subject.cfg['path']})", file=sys.stderr)
        needs = "; clients send the API key as 'Authorization: Bearer KEY'" if key else ""
        print(f"open {url} in a browser; the API is at {url}/v1{needs} (Ctrl-C stops)", file=sys.stderr, flush=True)

    serve(app, args.host, args.port, ready)
    return 0


__all__ = ["add_serve_parser", "cmd_serve"]
