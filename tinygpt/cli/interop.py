"""The `tinygpt import` and `tinygpt export` subcommands (Hugging Face GPT-2 in and out): parsing and printing only."""
from __future__ import annotations

import argparse
import json
import sys

from tinygpt.cli.args import path_arg
from tinygpt.interop.convert import export_hf, import_hf

IMPORT_HELP = ("a local Hugging Face GPT-2 folder (gpt2, gpt2-medium/-large/-xl, distilgpt2 or a fine-tuned GPT-2), "
               "or a Llama folder as `tinygpt export` writes for the modern options, with config.json, model.safetensors or pytorch_model.bin, and tokenizer.json or vocab.json + "
               "merges.txt; tinygpt never downloads it (see docs/guides/weights.md)")


def add_hf_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add `import DIR --out RUN` and `export RUN --format hf --out DIR`; each sets args.func(args)."""
    p = subparsers.add_parser("import", help="turn a local Hugging Face GPT-2 (or Llama) folder into a tinygpt "
                                             "checkpoint",
                              description="Import GPT-2 (or Llama) weights and tokenizer from a local Hugging Face folder. "
                                          "Nothing is unpickled and nothing is downloaded.")
    p.add_argument("folder", metavar="DIR", help=IMPORT_HELP)
    p.add_argument("--out", required=True, type=path_arg, help="checkpoint directory to create (must not exist, or be empty)")
    p.set_defaults(func=cmd_import)

    e = subparsers.add_parser("export", help="write a run's GPT as a folder Hugging Face transformers loads",
                              description="Export a GPT-2-shaped run (model 'gpt', char or BPE tokenizer) for "
                                          "GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained; a run "
                                          "with the modern options (rotary, RMSNorm, SwiGLU, no biases) as "
                                          "LlamaForCausalLM (Qwen3ForCausalLM with QK-norm).")
    e.add_argument("run_dir", metavar="RUN", help="run directory (uses best/, else latest/) or a checkpoint directory")
    e.add_argument("--format", required=True, choices=("hf",), help="hf: a Hugging Face transformers folder")
    e.add_argument("--out", required=True, type=path_arg, help="folder to create (must not exist, or be empty)")
    e.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    e.set_defaults(func=cmd_export)


def cmd_import(args: argparse.Namespace) -> int:
    r = import_hf(args.folder, args.out)
    c = r.config
    print(f"imported {args.folder}: {r.format}, {r.params / 1e6:.2f}M parameters ({c.n_layer} layers, {c.n_head} heads, "
          f"{c.n_embd} wide, {c.block_size}-token window, {c.vocab_size:,}-token vocabulary)")
    print(f"weights from {', '.join(r.weights)}, tokenizer from {r.tokenizer}; checkpoint saved in {r.out}")
    print(f"\nNext, try:\n  tinygpt sample {r.out} --prompt \"Hello, I'm a language model,\" --max_new_tokens 40",
          file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    r = export_hf(args.run_dir, args.out, args.checkpoint)
    print(f"exported {r.source} to {r.out}: {', '.join(r.files)}")
    model_class = json.loads((r.out / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    print(f"load it with transformers: {model_class}.from_pretrained({str(r.out)!r}), "  # the class it was written as
          f"AutoTokenizer.from_pretrained({str(r.out)!r})")
    return 0
