"""The `tinygpt inspect` subcommands: parse, call inspect/views.py, print its text, write --json."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinygpt.inspect import views
from tinygpt.device import choose_device
from tinygpt.files import write_text
from tinygpt.inspect.interpret import SALIENCY_METHODS

# view -> (help, default output file or None, accepted output suffixes)
VIEWS = {
    "attention": ("attention weights of every layer and head as a PNG grid (or one --layer / --head)",
                  "attention.png", (".png", ".svg", ".pdf")),
    "animate": ("a GIF of one layer's attention growing as each new token is generated", "attention.gif", (".gif",)),
    "steps": ("step-by-step next-token view: top candidates before and after the sampling settings "
              "(terminal; --out FILE.png or FILE.html)", None, (".png", ".html", ".htm")),
    "logit-lens": ("what each layer would predict: layers × positions (terminal; --out FILE.png or FILE.html)", None,
                   (".png", ".html", ".htm")),
    "saliency": ("which prompt tokens made the model predict the next token (terminal colours; --out FILE.html)",
                 None, (".html", ".htm")),
    "report": ("all of the above for one prompt in one self-contained offline HTML file", "report.html",
               (".html", ".htm")),
}


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect", help="look inside a trained model: attention, animation, steps, logit lens, saliency, report",
        description="Look inside a trained run. Each subcommand takes RUN_DIR and --prompt; task runs (the "
                    "calculator) take a question such as 'seven times eight'.")
    view_parsers = parser.add_subparsers(dest="view", metavar="VIEW")
    view_parsers.required = True
    for name, (help_text, default_out, _) in VIEWS.items():
        p = view_parsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (uses best/, else latest/) or a checkpoint")
        p.add_argument("--prompt", required=True, help="the text (or calculator question) to look at")
        p.add_argument("--out", default=None,
                       help=(f"output file (default {default_out}" + ("" if name == "report" else
                                                                       ", or none with --json") + ")")
                       if default_out else "optional output file")
        p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                       help="also write the numbers as JSON to FILE (no FILE: print them instead of the text)")
        p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
        p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
        if name in ("attention", "animate", "report"):
            p.add_argument("--layer", type=int, default=None if name == "attention" else -1,
                           help="one layer (0-based; -1 = the last)" if name == "attention" else
                           "the layer to animate (default -1, the last)")
        if name in ("attention", "animate"):
            p.add_argument("--head", type=int, default=None,
                           help="one head (default: all heads" + (")" if name == "attention" else ", averaged)"))
        if name in ("animate", "steps", "report"):
            p.add_argument("--max_new_tokens", type=int, default=None,
                           help="tokens to generate (default 20; a task run: up to the end of its answer)")
            p.add_argument("--temperature", type=float, default=None,
                           help="0 is greedy (default 0.8; a task run: 0)")
            p.add_argument("--top_k", type=int, default=None)
            p.add_argument("--top_p", type=float, default=None)
            p.add_argument("--seed", type=int, default=None, help="make sampling repeatable")
        if name == "animate":
            p.add_argument("--fps", type=float, default=2.0, help="frames per second (default 2)")
        if name in ("steps", "logit-lens"):
            p.add_argument("--top", type=int, default=5, help="candidates kept per position (default 5)")
        if name == "saliency":
            p.add_argument("--target", default=None, help="the next token to explain (default: the model's top one)")
            p.add_argument("--method", choices=SALIENCY_METHODS, default="integrated_gradients",
                           help="integrated_gradients (default) or gradient_x_input (one pass, but blind to what "
                                "LayerNorm removes)")
            p.add_argument("--ig_steps", type=int, default=32, help="integrated-gradients path points (default 32)")
            p.add_argument("--no_color", action="store_true", help="plain text instead of terminal colours")
        p.set_defaults(func=cmd_inspect)
    return parser


def _check_output(path: Path, what: str) -> None:
    """Refuse an output that would land in a checkpoint directory or replace a run's metrics."""
    folder = path.resolve().parent
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        raise ValueError(f"{what} {path} is inside a checkpoint directory; write it somewhere else")
    if path.name == "metrics.jsonl" or path.is_dir():
        raise ValueError(f"{what} {path} would replace {'a directory' if path.is_dir() else 'a run log'}")


def _outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """Validate --out and --json before any work: (image/page path or None, JSON path or None)."""
    _, default_out, suffixes = VIEWS[args.view]
    out = args.out
    if out is None and default_out and (args.json is None or args.view == "report"):
        out = default_out
    out = Path(out) if out is not None else None
    if out is not None:
        if out.suffix.lower() not in suffixes:
            raise ValueError(f"--out for {args.view} must end in {' or '.join(suffixes)}, got {str(out)!r}")
        _check_output(out, "--out")
    js = None
    if args.json not in (None, "-"):
        if not args.json.strip():
            raise ValueError("--json needs a file name (or nothing, to print the numbers)")
        js = Path(args.json)
        _check_output(js, "--json")
        if out is not None and js.resolve() == out.resolve():
            raise ValueError("--json and --out name the same file")
    return out, js


def cmd_inspect(args: argparse.Namespace) -> int:
    for flag in ("max_new_tokens", "top", "ig_steps"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be >= 1")
    if not 0.1 <= getattr(args, "fps", 2.0) <= 50:  # also refuses NaN
        raise ValueError("--fps must be between 0.1 and 50")
    out, js = _outputs(args)
    subject = views.open_run(args.run_dir, args.checkpoint, choose_device(args.device))
    sampling = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
                if hasattr(args, k)}
    if args.view == "attention":
        view = views.attention(subject, args.prompt, out, layer=args.layer, head=args.head)
    elif args.view == "animate":
        view = views.animate(subject, args.prompt, out, layer=args.layer, head=args.head, fps=args.fps,
                                 **sampling)
    elif args.view == "steps":
        view = views.steps(subject, args.prompt, out, k=args.top, **sampling)
    elif args.view == "logit-lens":
        view = views.logit_lens(subject, args.prompt, out, k=args.top)
    elif args.view == "saliency":
        view = views.saliency(subject, args.prompt, out, target=args.target, method=args.method,
                                  steps=args.ig_steps, color=not args.no_color and sys.stdout.isatty())
    else:
        view = views.report(subject, args.prompt, out, layer=args.layer, **sampling)
    for note in view.notices:
        print(f"note: {note}", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(view.data, ensure_ascii=False))
    else:
        print(view.text)
        if js is not None:
            write_text(js, json.dumps(view.data, ensure_ascii=False) + "\n")
            print(f"wrote {js}")
    for f in view.files:
        print(f"wrote {f}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
